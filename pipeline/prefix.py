"""What every grid point of a batch computes alike, computed once: the vision encoder, and
the decoder layers before each point's first pruning layer.

A sweep answers each batch under every grid point (``pipeline.stages.InferStage``). All
points see the same pixels, and a point whose first pruning layer is K runs layers
0 .. K-1 on the same unpruned sequence as every point whose first layer is K or deeper
(the unpruned baseline prunes nowhere). :class:`SharedPrefix`, installed once on a model
by ``pipeline.infer.Generator`` and active inside ``Generator.shared(configs)``, keeps:

- vision: the model's ``get_image_features`` / ``get_video_features`` outputs, by the
  identity of the pixel tensor (inside ``shared`` the batch is collated and moved to the
  device once, so every point passes the same tensors). A point whose method reads the
  vision encoder's own signals (``vision_attention`` / ``vision_keys``, captured inside
  the encoder: VisionZip) runs the encoder again.
- layers: in a point's prefill each decoder layer i below its first pruning layer is
  either run and recorded (its output, the keys and values it put in the cache, and its
  seconds) or, when another point of the batch recorded it, replayed: the recorded keys
  and values go into this prefill's cache and the recorded output is returned. The
  layer's module hooks run either way. A replayed layer just before a pruning layer hands
  the engine its normed input (``PruningHandle.replayed_layer``), as its attention would,
  so the "layer K-1" signals are the same. Layers are recorded up to the second-deepest
  first pruning layer among the batch's points (deeper, no other point would replay them),
  by whichever point reaches them first, so the order of the points does not matter.

Timings stay those of each point alone: the encoder's and each recorded layer's seconds
are measured once (synchronised on CUDA) and added to the TTFT, prefill and generate
times of every point that replays them; ``shared_s`` is that sum per point, so a point's
own compute is its time minus ``shared_s``. Memory: the record holds the encoder outputs
and, per shared layer, the batch's output states and keys/values; it is dropped when the
``shared`` block ends or the inputs change (one batch's record at a time).

Only the prefill of a ``generate`` is shared (decode steps run every layer on their own
cache), and only with a transformers ``DynamicCache``-style cache (``cache.layers[i]``
with ``keys`` / ``values``); otherwise the layers run as usual.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from pruning import seams
from pruning.config import NO_PRUNING
from pruning.models import family_for
from pruning.models.base import InstanceAttribute, override_encoders

log = logging.getLogger(__name__)


@dataclass
class _Layer:
    output: object  # what the layer returned
    keys: torch.Tensor
    values: torch.Tensor
    seconds: float


@dataclass
class _Encoded:
    output: object
    seconds: float
    in_forward: bool  # the encoder ran inside the model's forward (counted in its prefill)


@dataclass
class Shared:
    """What one prefill took from the record: seconds to add to its own timings."""

    vision_s: float = 0.0  # encoder calls served from the record
    vision_in_prefill_s: float = 0.0  # of which ran inside the forward when recorded
    layers_s: float = 0.0  # layers replayed

    @property
    def total_s(self) -> float:
        return self.vision_s + self.layers_s


class SharedPrefix:
    """The record of one batch's shared vision outputs and lower layers (see the module)."""

    def __init__(self, model: nn.Module, on_replay: Optional[Callable] = None):
        self.model = model
        self.layers = family_for(model).text_model(model).layers
        self.on_replay = on_replay  # (layer index, hidden_states, kwargs) of a replayed layer
        self.active = False
        self._key = None  # the batch the record belongs to
        self._encoded: dict = {}
        self._recorded: dict[int, _Layer] = {}
        self.depth = 0  # layers below this are recorded / replayed
        self.peak_bytes = 0  # the largest the record grew since the last reset_peak()
        # Per generate call (arm .. disarm):
        self._armed = False
        self._limit = 0  # this point's first pruning layer
        self._vision_ok = True
        self._in_prefill = False
        self._in_forward = False
        self.shared = Shared()
        self._broken = False
        self._hooks = [model.register_forward_pre_hook(self._on_call), model.register_forward_hook(self._on_return)]
        self._hooks += self._memoise_encoders()
        for index, layer in enumerate(self.layers):
            previous = layer.__dict__.get("forward")  # e.g. accelerate's device hook
            layer.forward = self._wrap_layer(index, layer.forward)
            self._hooks.append(InstanceAttribute(layer, "forward", layer.forward, previous))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # -- the batch -------------------------------------------------------------------

    def begin(self, key, depth: int) -> None:
        """Share among the points of batch ``key`` the layers below ``depth``."""
        if key != self._key:
            self.drop()
        self._key, self.depth, self.active = key, depth, True

    def drop(self) -> None:
        self._key, self._encoded, self._recorded, self.active = None, {}, {}, False

    def nbytes(self) -> int:
        """Bytes of tensors the record holds now."""
        return _nbytes([e.output for e in self._encoded.values()]) + \
            _nbytes([(r.output, r.keys, r.values) for r in self._recorded.values()])

    def reset_peak(self) -> None:
        self.peak_bytes = self.nbytes()

    def arm(self, limit: int, vision_ok: bool) -> None:
        """The next forward is the prefill of a point whose first pruning layer is ``limit``."""
        self._armed, self._limit, self._vision_ok = self.active, limit, vision_ok
        self.shared = Shared()

    def disarm(self) -> Shared:
        """End of the call: what it took from the record (zero when it was not armed)."""
        self._armed = self._in_prefill = False
        shared, self.shared = self.shared, Shared()
        return shared

    # -- hooks -----------------------------------------------------------------------

    def _on_call(self, module, args):
        self._in_forward = True
        if self._armed:
            self._in_prefill, self._armed = True, False  # only the first forward of the call

    def _on_return(self, module, args, output):
        self._in_forward = self._in_prefill = False

    def _memoise_encoders(self) -> list:
        def make(modality, original):
            def encode(*args, **kwargs):
                if not self.active:
                    return original(*args, **kwargs)
                named = inspect.signature(original).bind_partial(*args, **kwargs).arguments
                pixels = next((v for k, v in named.items() if k.startswith("pixel_values")), None)
                key = (modality, _identity(pixels))
                hit = self._encoded.get(key)
                if hit is not None and self._vision_ok:
                    self.shared.vision_s += hit.seconds
                    self.shared.vision_in_prefill_s += hit.seconds if hit.in_forward else 0.0
                    return hit.output
                device = pixels.device if isinstance(pixels, torch.Tensor) else torch.device("cpu")
                _sync(device)
                start = time.perf_counter()
                output = original(*args, **kwargs)
                _sync(device)
                if hit is None:
                    self._encoded[key] = _Encoded(output, time.perf_counter() - start, self._in_forward)
                    self.peak_bytes = max(self.peak_bytes, self.nbytes())
                return output

            return encode

        return override_encoders(self.model.base_model, make)

    def _wrap_layer(self, index: int, forward):
        @functools.wraps(forward)  # keeps the signature (pruning.seams inspects it)
        def layer_forward(*args, **kwargs):
            return self._layer_forward(index, forward, *args, **kwargs)

        return layer_forward

    def _layer_forward(self, index: int, forward, *args, **kwargs):
        if not (self._in_prefill and index < min(self._limit, self.depth)) or self._broken:
            return forward(*args, **kwargs)
        cache = seams.find_cache(args, kwargs)
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        record = self._recorded.get(index)
        if record is not None and cache is not None:
            cache.update(record.keys, record.values, index)
            if self.on_replay is not None:
                self.on_replay(index, hidden, kwargs)
            self.shared.layers_s += record.seconds
            return record.output
        _sync(hidden.device)
        start = time.perf_counter()
        output = forward(*args, **kwargs)
        _sync(hidden.device)
        seconds = time.perf_counter() - start
        layer_cache = getattr(cache, "layers", None)
        if layer_cache is None or len(layer_cache) <= index or getattr(layer_cache[index], "keys", None) is None:
            log.warning("the KV cache (%s) has no per-layer keys/values: the lower layers are not shared",
                        type(cache).__name__)
            self._broken = True
            return output
        self._recorded[index] = _Layer(output, layer_cache[index].keys, layer_cache[index].values, seconds)
        self.peak_bytes = max(self.peak_bytes, self.nbytes())
        return output


def first_layer(config, num_layers: int) -> int:
    """The layer a config prunes first before (the unpruned baseline: every layer is shared)."""
    return num_layers if config.method == NO_PRUNING else config.prune_layers[0]


def shared_depth(configs, num_layers: int) -> int:
    """The layers worth recording for ``configs``: below the second-deepest first pruning
    layer (one point alone reuses nothing)."""
    depths = sorted((first_layer(c, num_layers) for c in configs), reverse=True)
    return depths[1] if len(depths) > 1 else 0


def _nbytes(obj, seen=None) -> int:
    """Bytes of the distinct tensors in ``obj`` (nested tuples, lists, dicts, ModelOutputs)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if obj.data_ptr() in seen:
            return 0
        seen.add(obj.data_ptr())
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(v, seen) for v in obj)
    return 0


def _identity(tensor) -> tuple:
    if not isinstance(tensor, torch.Tensor):
        return (id(tensor),)
    return (id(tensor), tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
