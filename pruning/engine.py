"""Prune visual tokens inside a transformers VLM, once per prefill, through forward hooks.

``apply(model, config)`` installs hooks; from then on every ``forward`` and ``generate``
of the model removes visual tokens before decoder layer K (``config.layer``):

    model pre-hook          finds each sample's visual spans from input_ids + grids (prefill)
    layer K-1 attention     takes its normed input and computes rotary keys (and, for
      pre-hook              FastV, the last prompt token's attention row)
    layer K pre-hook        runs the method per span, gathers the kept tokens (text is
                            never removed), left-pads the batch to the longest kept
                            sequence, and swaps in gathered rotary embeddings, position
                            ids and a causal mask built for the shorter sequence
    layers > K pre-hooks    receive the same swapped arguments

Semantics (../shared/spec/vlm-pruner.md): kept tokens keep their original position
ids (rotary cos/sin are gathered, not recomputed), layers before K cache the full
sequence and layers from K on only the kept tokens, and decoding continues at the
original length: the model's own rotary positions are untouched, only the attention
mask of layers >= K is rebuilt each decode step from the kept columns plus the new
ones. With K = 0 the tokens are removed right after the projector, before any decoder
layer (signals of "layer K-1" then come from layer 0's own input norm and projections).

Progressive configs (``stages``) prune again before each later stage layer, on the
survivors (spans at their new slots, ``token_index`` their cells in the original grid);
each stage's layers cache that stage's tokens and get that stage's mask in decode.
``positions: renumbered`` gives the kept sequence fresh 1-D ids (rotary recomputed by
the text model's ``rotary_emb``), and decode steps continue after the kept tokens.

Prefill or decode step is decided from state the engine owns: a call continues the
engine's pruned prefill when it is given the very KV cache that prefill filled, at the
length the previous call left it (the cache is found by type, not by keyword name).
Every transformers internal used here is checked by ``pruning.seams`` before a hook is
installed.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from pruning import seams, vision
from pruning.config import NO_PRUNING, PruningConfig
from pruning.methods import get_method
from pruning.models import Span, family_for
from pruning.models.base import override_encoders


@dataclass
class SpanStats:
    """What happened to one visual span. ``keep`` indexes the span's own tokens (raster
    order over ``grid``), so a caller can draw the kept tokens on the image."""

    kind: str
    grid: tuple[int, int, int]
    before: int
    after: int
    keep: list[int]
    select_seconds: float
    stages: list[int] = field(default_factory=list)  # tokens left after each stage (progressive)


@dataclass
class CallStats:
    """One pruned prefill: per sample, its spans; plus sequence lengths per sample."""

    samples: list[list[SpanStats]] = field(default_factory=list)
    seq_len: int = 0
    kept_seq_len: list[int] = field(default_factory=list)
    select_seconds: float = 0.0

    def visual_tokens(self) -> tuple[list[int], list[int]]:
        """Per sample: visual tokens before and after pruning."""
        return ([sum(s.before for s in spans) for spans in self.samples],
                [sum(s.after for s in spans) for spans in self.samples])


class PruningHandle:
    """Hooks installed by :func:`apply`; ``remove()`` (or leaving a ``with`` block) undoes them.

    ``stats`` holds the :class:`CallStats` of the latest prefill. ``config`` may be
    replaced between calls (same layers) to switch method or rate on a loaded model.
    A progressive config prunes before each of its stage layers, each stage on the
    tokens the previous one kept.
    """

    def __init__(self, model: nn.Module, config: PruningConfig):
        self.model, self.family = model, family_for(model)
        self.text = self.family.text_model(model)
        self.stage_layers = config.prune_layers  # the unpruned baseline ('none') only records spans
        self.layer = self.stage_layers[0]
        checked = [seams.check(model, self.family, self.text, layer) for layer in self.stage_layers]
        self._seams = checked[0]
        layers = self.text.layers
        config.validate(num_layers=len(layers))
        self._config = config
        self._check_layer_zero_signals(config)
        self.stats: CallStats | None = None
        self.keep_index: torch.Tensor | None = None  # (B, S') kept positions, -1 = padding
        self._pending: dict | None = None  # per prefill: spans, masks, captured signals
        self._decode: dict | None = None  # after a pruned prefill: its cache, what decode steps need
        self._swap: dict | None = None  # arguments given to layers >= K in this forward

        hooks = [model.register_forward_pre_hook(self._on_model_call, with_kwargs=True),
                 model.register_forward_hook(self._on_model_return)]
        # The states entering layer 0, for methods that read the LLM's inputs at a later layer.
        hooks.append(layers[0].register_forward_pre_hook(self._capture_inputs, with_kwargs=True))
        for layer in self.stage_layers:
            if layer >= 1:
                hooks.append(layers[layer - 1].self_attn.register_forward_pre_hook(
                    self._capture_signals, with_kwargs=True))
        for index in range(self.layer, len(layers)):
            hooks.append(layers[index].register_forward_pre_hook(
                functools.partial(self._at_layer, index), with_kwargs=True))
        self._media: dict = {}  # per modality: what the vision encoder was last given
        self._recording = False
        self._hooks = hooks + self._capture_media_inputs() + self.family.install(model, self)
        self._vision = vision.capture(model, self.family, self._signals())  # None: no vision signal read
        self._hooks += self._vision.hooks if self._vision is not None else []

    @property
    def sequence_is_pruned(self) -> bool:
        """True while layers >= K of a pruned prefill run (their inputs are the kept tokens)."""
        return self._swap is not None and self.keep_index is not None

    @property
    def config(self) -> PruningConfig:
        return self._config

    @config.setter
    def config(self, config: PruningConfig) -> None:
        config.validate(num_layers=len(self.text.layers))
        if config.prune_layers != self.stage_layers:
            raise ValueError(f"layer: this handle prunes before layers {list(self.stage_layers)}; "
                             f"apply a new handle for layers {list(config.prune_layers)}")
        self._check_layer_zero_signals(config)
        self._config = config

    def accepts(self, config: PruningConfig) -> bool:
        """Whether ``config`` can be switched to on this handle (``handle.config = config``):
        the same stage layers, and the vision encoder's signals captured if it reads them."""
        return config.prune_layers == self.stage_layers and \
            (self._vision is not None or not vision.VISION_SIGNALS & self._signals(config))

    def replayed_layer(self, index: int, hidden_states: torch.Tensor, kwargs: dict) -> None:
        """Decoder layer ``index`` of this prefill was not run but replayed from a record of
        the same inputs (``pipeline.prefix``): take from its input what its attention's
        pre-hook would have (the signals of the layer before a pruning layer)."""
        if index + 1 not in self.stage_layers:
            return
        layer = self.text.layers[index]
        self._capture_signals(layer.self_attn, (), {**kwargs, "hidden_states": layer.input_layernorm(hidden_states)})

    def _check_layer_zero_signals(self, config: PruningConfig) -> None:
        """At layer 0 the layer-before signals come from layer 0's own input norm and attention;
        renumbered positions need the text model's rotary embedding."""
        if config.positions == "renumbered" and not isinstance(getattr(self.text, "rotary_emb", None), nn.Module):
            raise seams.refuse("the text model must have .rotary_emb (positions: renumbered)",
                               type(self.text).__name__)
        own = [0] if self.layer == 0 and _FROM_LAYER_BEFORE & self._signals(config) else []
        own += list(self.stage_layers) if "layer_attention" in self._signals(config) else []
        for index in own:
            for name in ("input_layernorm", "self_attn"):
                if not isinstance(getattr(self.text.layers[index], name, None), nn.Module):
                    raise seams.refuse(f"decoder layer {index} must have .{name} (signals from its own input)",
                                       type(self.text.layers[index]).__name__)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> "PruningHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _capture_media_inputs(self) -> list:
        """Record what the vision encoder is given (grids, image sizes).

        ``generate`` runs ``get_image_features`` / ``get_video_features`` once, before the
        first forward, and passes their outputs (``mm_encoder_outputs``) instead of the
        pixels and grids to every forward of that call, so the spans' grids are taken
        here. The wrappers keep the originals' signatures (generate inspects them).
        """
        def make(modality, original):
            def record(*args, **kwargs):
                if self._recording:  # Qwen3-VL's video getter calls the image getter
                    return original(*args, **kwargs)
                named = inspect.signature(original).bind_partial(*args, **kwargs).arguments
                self._media[modality] = {k: v for k, v in {**named.pop("kwargs", {}), **named}.items()
                                         if not k.startswith("pixel_values")}
                self._recording = True
                try:
                    return original(*args, **kwargs)
                finally:
                    self._recording = False

            return record

        return override_encoders(self.model.base_model, make)

    # -- model call ------------------------------------------------------------------

    def _on_model_call(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = seams.find_cache(args, kwargs)
        self._pending = self._swap = None
        mask = kwargs.get("attention_mask")
        d = self._decode
        if d is not None and cache is not None and cache is d["cache"] and \
                cache.get_seq_length() == d["cache_len"]:
            # A decode step of the pruned prefill. Columns of the original-length mask
            # added since the prefill (one per token).
            step = input_ids.shape[1] if input_ids is not None else kwargs["inputs_embeds"].shape[1]
            if isinstance(mask, torch.Tensor) and mask.dim() == 2:
                d["new_columns"] = mask[:, d["seq_len"]:].to(d["device"], torch.long)
            else:
                d["new_columns"] = torch.ones(input_ids.shape[0] if input_ids is not None else
                                              kwargs["inputs_embeds"].shape[0], d["seen"] + step - d["seq_len"],
                                              dtype=torch.long, device=d["device"])
            d["seen"] += step
            return None
        self._decode = self.keep_index = None
        if cache is not None and cache.get_seq_length() > 0:
            return None  # continues a cache the engine did not prune: left as it is
        if input_ids is None:
            return None
        mask = _mask_2d(mask, input_ids)
        media = {}
        for modality, encoded in (kwargs.get("mm_encoder_outputs") or {}).items():
            if encoded is not None:
                media.update(self._media.get(modality, {}))
        spans = self.family.spans(self.model, input_ids, {**media, **kwargs})
        if any(spans):
            self._pending = {"spans": spans, "mask": mask}
        else:  # nothing visual: record that, change nothing
            batch, seq_len = input_ids.shape
            self.stats = CallStats([[] for _ in range(batch)], seq_len, [seq_len] * batch)
        return None

    def _on_model_return(self, module, args, output):
        self._pending = self._swap = None
        d = self._decode
        if d is not None and d["cache"] is not None:
            d["cache_len"] = d["cache"].get_seq_length()  # what the next decode step must find
        return None

    # -- layer K-1: signals -----------------------------------------------------------

    def _capture_signals(self, module, args, kwargs):
        pending = self._pending
        if pending is None or not _FROM_LAYER_BEFORE & self._signals():
            return None
        hidden = kwargs.get("hidden_states", args[0] if args else None)  # (B, S, D) normed
        tables = seams.rotary_tables(kwargs, hidden.shape[1], "the attention before a pruning layer")
        self._capture(module, hidden, tables)
        return None

    def _capture_inputs(self, module, args, kwargs):
        if self._pending is not None and _INPUTS & self._signals():
            self._pending["inputs"] = kwargs.get("hidden_states", args[0] if args else None)  # (B, S, D)
        return None

    def _capture(self, module, hidden, tables) -> None:
        """Keys (and attention rows) of attention ``module`` on its normed input ``hidden``."""
        pending, wanted = self._pending, self._signals()
        queries = bool(_NEED_QUERIES & wanted)  # only attention rows need queries
        q, k = rotary_query_key(module, hidden, tables, queries=queries)
        b, _, s, d = k.shape
        pending["keys"] = k.transpose(1, 2).reshape(b, s, -1)  # (B, S, kv_heads * d)
        if "attention" in wanted:
            pending["attention"] = last_token_attention(q, k, pending["mask"].to(q.device), module.scaling)
        if "text_attention" in wanted:
            pending["qk"] = (q, k, module.scaling)

    def _signals(self, config: PruningConfig | None = None) -> set[str]:
        """The signals the configured method reads (none unpruned)."""
        config = config or self._config
        if config.method == NO_PRUNING:
            return set()
        return set(get_method(config.method).signals)

    # -- layers >= K: prune at each stage layer, pass the swapped arguments on -----------

    def _at_layer(self, index: int, module, args, kwargs):
        if self._swap is not None:
            kwargs.update(self._swap)  # what the previous stage gave the shorter sequence
        if index in self.stage_layers:
            if self._pending is not None:
                args, kwargs = self._prune_prefill(self.stage_layers.index(index), args, kwargs)
            elif self._decode is not None and "new_columns" in self._decode and \
                    index in self._decode["stages"]:
                self._swap = self._decode_swap(index, args, kwargs)
                kwargs.update(self._swap)
        return args, kwargs

    def _decode_swap(self, index: int, args, kwargs) -> dict:
        """A decode step's arguments for the layers of the stage that starts at ``index``:
        its kept columns plus the new ones (and, renumbered, positions after its kept ones)."""
        d, stage = self._decode, self._decode["stages"][index]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        mask = torch.cat([stage["mask"], d["new_columns"]], dim=1)
        swap = {"attention_mask": self._causal_mask(hidden, mask, d["cache"], index)}
        if self._config.positions == "renumbered":
            step = hidden.shape[1]
            offset = d["seen"] - step - d["seq_len"]  # tokens generated before this step
            ids = stage["length"][:, None] + offset + torch.arange(step, device=hidden.device)  # (B, step)
            swap.update(self._renumbered(hidden, ids, kwargs))
        return swap

    def _renumbered(self, hidden, ids: torch.Tensor, kwargs) -> dict:
        """Rotary tables (and position ids) for 1-D positions ``ids`` (B, S'): every rotary
        section (Qwen's M-RoPE t, h, w) gets the same id, as for text."""
        out = {"position_embeddings": self.text.rotary_emb(hidden, ids)}
        position_ids = kwargs.get("position_ids")
        if isinstance(position_ids, torch.Tensor):
            out["position_ids"] = ids.expand(*position_ids.shape[:-2], *ids.shape)
        return out

    def _prune_prefill(self, stage: int, args, kwargs):
        pending, config = self._pending, self._config
        layer = self.stage_layers[stage]
        hidden = kwargs.get("hidden_states", args[0] if args else None)  # (B, S, D)
        if hidden is None or "attention_mask" not in kwargs:
            raise seams.refuse(f"decoder layer {layer} must be called with hidden_states and an "
                               "attention_mask keyword (the engine swaps them)",
                               f"got keywords {', '.join(kwargs)}")
        cos, sin = seams.rotary_tables(kwargs, hidden.shape[1], f"decoder layer {layer}")
        # A model split over devices (device_map): what earlier layers and the model's
        # inputs gave sits elsewhere; everything is moved to this layer's device once.
        device = hidden.device
        cos, sin = cos.to(device), sin.to(device)
        pending = self._pending = _to_device(pending, device)
        if layer == 0 and _FROM_LAYER_BEFORE & self._signals():
            first = self.text.layers[0]  # keys of layer 0 from its own input (the embeddings)
            self._capture(first.self_attn, first.input_layernorm(hidden), (cos, sin))
        if "layer_attention" in self._signals():
            own = self.text.layers[layer]
            q, k = rotary_query_key(own.self_attn, own.input_layernorm(hidden), (cos, sin))
            pending["layer_attention"] = last_token_attention(q, k, pending["mask"].to(device), own.self_attn.scaling)
        batch, seq_len = hidden.shape[:2]
        normed = self.text.norm(hidden).to(device) if _NORMED & self._signals() else None
        stats = pending.setdefault("stats", [[] for _ in range(batch)])
        keep_rows, new_states, new_spans, new_index, removed = self._select_spans(stage, hidden, normed, stats)
        kept_seq_len = [int(k.numel()) for k in keep_rows]
        previous = self.stats.kept_seq_len if stage and self.stats else [seq_len] * batch
        self.stats = CallStats(stats, pending["seq_len"] if stage else seq_len, kept_seq_len,
                               sum(s.select_seconds for spans in stats for s in spans))
        last = stage == len(self.stage_layers) - 1
        if stage == 0:
            pending["seq_len"] = seq_len
        if not removed:  # this stage changes nothing
            pending["token_index"] = new_index
            self._pending = None if last else pending
            self.stats.kept_seq_len = previous
            return args, kwargs

        width = max(kept_seq_len)
        keep_index = torch.full((batch, width), -1, dtype=torch.long, device=device)
        for b, rows in enumerate(keep_rows):
            keep_index[b, width - rows.numel():] = rows  # left padding, like generate's inputs
        safe = keep_index.clamp_min(0)
        new_hidden = hidden.gather(1, safe[..., None].expand(-1, -1, hidden.shape[-1])).clone()
        for b, row_states in enumerate(new_states):
            for positions, states in row_states.items():
                slots = torch.searchsorted(keep_index[b, width - keep_rows[b].numel():], positions)
                new_hidden[b, width - keep_rows[b].numel() + slots] = states.to(new_hidden.dtype)
        new_hidden[keep_index < 0] = 0
        pruned_mask = pending["mask"].gather(1, safe) * (keep_index >= 0)  # (B, S')

        cache = seams.find_cache(args, kwargs)
        swap = {"attention_mask": self._causal_mask(new_hidden, pruned_mask, cache, layer)}
        if config.positions == "renumbered":
            swap.update(self._renumbered(new_hidden, (pruned_mask.cumsum(1) - 1).clamp_min(0), kwargs))
        else:
            swap["position_embeddings"] = (_gather_seq(cos, safe), _gather_seq(sin, safe))
            position_ids = kwargs.get("position_ids")
            if isinstance(position_ids, torch.Tensor) and position_ids.shape[-1] == seq_len:
                swap["position_ids"] = _gather_last(position_ids.to(device), safe)
        # keep_index maps the kept sequence to the original one across the stages.
        earlier = self.keep_index if stage and self.keep_index is not None else None
        self._swap = swap
        self.keep_index = keep_index if earlier is None else \
            torch.where(keep_index >= 0, earlier.gather(1, safe), -1)
        if self._decode is None:
            self._decode = {"seq_len": pending["seq_len"], "seen": pending["seq_len"], "cache": cache,
                            "cache_len": None, "stages": {}, "device": device}
        self._decode["stages"][layer] = {"mask": pruned_mask, "length": pruned_mask.sum(1)}
        # The next stage sees the kept sequence: spans at their new slots, its padding mask.
        offsets = [width - rows.numel() for rows in keep_rows]
        pending["spans"] = [[Span(offsets[b] + torch.searchsorted(keep_rows[b], kept), span.grid, span.kind)
                             for kept, span in new_spans[b]] for b in range(batch)]
        pending["token_index"], pending["mask"] = new_index, pruned_mask
        for captured in ("keys", "attention", "qk", "layer_attention"):
            pending.pop(captured, None)
        self._pending = None if last else pending
        if "hidden_states" in kwargs:
            kwargs["hidden_states"] = new_hidden
        else:
            args = (new_hidden,) + tuple(args[1:])
        kwargs.update(swap)
        return args, kwargs

    def _select_spans(self, stage: int, hidden, normed, stats):
        """Run the method on every span of the batch at this stage; returns per sample the
        kept sequence positions (B lists), the fused states by kept positions, the spans'
        kept positions, the survivors' grid cells, and whether anything was removed."""
        pending, config = self._pending, self._config
        (batch, seq_len), device = hidden.shape[:2], hidden.device
        keep_rows, new_states, new_spans, new_index = [], [], [], []
        removed = False
        for b in range(batch):
            # Padding slots an earlier stage added go; the input's own padding stays (masked).
            keep = self.keep_index[b] >= 0 if stage and self.keep_index is not None else \
                torch.ones(seq_len, dtype=torch.bool, device=device)
            row_states, spans, indices = {}, [], []
            visual = torch.zeros(seq_len, dtype=torch.bool, device=device)
            for span in pending["spans"][b]:
                visual[span.positions] = True
            for j, span in enumerate(pending["spans"][b]):
                token_index = pending["token_index"][b][j] if stage else \
                    torch.arange(span.num_tokens, device=device)
                retain = config.num_retain_for(math.prod(span.grid), stage)
                _sync(device)  # so that select_seconds covers the selection's kernels alone
                start = time.perf_counter()
                local, states = self._select(b, span, hidden, normed, visual, pending, retain, token_index)
                _sync(device)
                elapsed = time.perf_counter() - start
                removed |= local.numel() < span.num_tokens
                keep[span.positions] = False
                kept_positions = span.positions[local]
                keep[kept_positions] = True
                if states is not None:
                    row_states[kept_positions] = states
                indices.append(token_index[local])
                spans.append((kept_positions, span))
                if stage == 0:
                    stats[b].append(SpanStats(span.kind, span.grid, span.num_tokens, 0, [], 0.0))
                record = stats[b][j]
                record.after, record.keep = local.numel(), token_index[local].tolist()
                record.select_seconds += elapsed
                record.stages.append(local.numel())
            keep_rows.append(keep.nonzero().squeeze(1))
            new_states.append(row_states)
            new_spans.append(spans)
            new_index.append(indices)
        return keep_rows, new_states, new_spans, new_index, removed

    def _select(self, b: int, span: Span, hidden, normed, visual, pending, num_retain: int, token_index):
        """Run the configured method on one span; returns (kept local indices, fused states).

        The method's declared signals are its arguments (``pruning.methods.registry``):
        each is computed here, for this span only, when the method asks for it."""
        config = self._config
        pos = span.positions
        if config.method == NO_PRUNING:
            return torch.arange(span.num_tokens, device=pos.device), None
        spec = get_method(config.method)

        @functools.cache
        def text_after() -> torch.Tensor:  # the prompt's text tokens after the span
            after = torch.arange(int(pos.max()) + 1, hidden.shape[1], device=hidden.device)
            return after[~visual[after] & (pending["mask"][b, after] > 0)]

        def original(positions: torch.Tensor) -> torch.Tensor:  # positions in the unpruned sequence
            return positions if self.keep_index is None else self.keep_index[b].to(positions.device)[positions]

        provide = {
            "hidden_states": lambda: hidden[b, pos],
            "embeddings": lambda: hidden[b, pos],
            "normed_hidden_states": lambda: normed[b, pos],
            "key_states": lambda: pending["keys"][b, pos],
            "attention": lambda: pending["attention"][b][:, pos],
            "layer_attention": lambda: pending["layer_attention"][b][:, pos],
            "text_key_states": lambda: pending["keys"][b, text_after()],
            "text_normed_hidden_states": lambda: normed[b, text_after()],
            "text_hidden_states": lambda: hidden[b, text_after()],
            "input_embeddings": lambda: pending["inputs"][b, original(pos)],
            "text_input_embeddings": lambda: pending["inputs"][b, original(text_after())],
            "text_attention": lambda: rows_attention(*pending["qk"], pending["mask"][b], b, text_after())[:, :, pos],
            # the vision encoder's signals cover the span's original tokens: the survivors' rows
            "vision_attention": lambda: vision.for_span(self._vision, pending["spans"], span).attention[token_index],
            "vision_keys": lambda: vision.for_span(self._vision, pending["spans"], span).keys[token_index],
            "token_index": lambda: token_index,
            "grid": lambda: span.grid,
            "num_tokens": lambda: span.num_tokens,
            "device": lambda: hidden.device,
        }
        signals = {name: provide[name]() for name in spec.signals}
        sel = spec.select(**signals, num_retain=num_retain, **config.method_params())
        return sel.keep.to(pos.device), sel.hidden_states

    def _causal_mask(self, hidden, mask_2d, cache, layer: int):
        return self._seams.causal_mask(self.text.config, hidden, mask_2d, cache, layer)


# Signals computed from layer K-1's rotary keys (and queries), and from the final norm.
_FROM_LAYER_BEFORE = {"key_states", "attention", "text_key_states", "text_attention"}
_NORMED = {"normed_hidden_states", "text_normed_hidden_states"}
_NEED_QUERIES = {"attention", "text_attention"}
_INPUTS = {"input_embeddings", "text_input_embeddings"}


def apply(model: nn.Module, config: PruningConfig) -> PruningHandle:
    """Prune ``model``'s visual tokens per ``config`` in every forward/generate from now on.

    Example:
        >>> with pruning.apply(model, PruningConfig(method="vlm_pruner", pruning_rate=0.889)) as h:
        ...     out = model.generate(**inputs, max_new_tokens=16)
        ...     h.stats.visual_tokens()   # ([576], [64])
    """
    return PruningHandle(model, config)


def rotary_query_key(attn: nn.Module, hidden: torch.Tensor, position_embeddings, *,
                     queries: bool = True):
    """Queries (B, H, S, d) and keys (B, Hkv, S, d) of ``attn`` after its rotary embedding,
    recomputed from the layer's normed input exactly as its forward does (including the
    per-head q/k norms of Qwen3). ``queries=False`` skips the queries (returns None)."""
    b, s, _ = hidden.shape
    d = attn.head_dim
    cos, sin = position_embeddings
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rotated(proj, norm):
        x = proj(hidden).view(b, s, -1, d)
        if norm is not None:
            x = norm(x)
        x = x.transpose(1, 2)
        return x * cos + _rotate_half(x) * sin

    k = rotated(attn.k_proj, getattr(attn, "k_norm", None))
    q = rotated(attn.q_proj, getattr(attn, "q_norm", None)) if queries else None
    return q, k


def last_token_attention(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, scaling: float):
    """(B, H, S) attention of each sample's last real token over the sequence.

    q: (B, H, S, d); k: (B, Hkv, S, d); mask: (B, S) 1 for real tokens. The last real
    token sees every earlier real token (causal), so only padding is masked out.
    """
    b, h, s, _ = q.shape
    last = (mask * torch.arange(s, device=mask.device)).argmax(dim=1)  # (B,)
    query = q[torch.arange(b), :, last]  # (B, H, d)
    keys = k.repeat_interleave(h // k.shape[1], dim=1)  # (B, H, S, d)
    logits = torch.einsum("bhd,bhsd->bhs", query.float(), keys.float()) * scaling
    valid = (mask > 0) & (torch.arange(s, device=mask.device)[None] <= last[:, None])
    logits = logits.masked_fill(~valid[:, None, :], -math.inf)
    return torch.softmax(logits, dim=-1)


def rows_attention(q: torch.Tensor, k: torch.Tensor, scaling: float, mask: torch.Tensor, b: int,
                   rows: torch.Tensor) -> torch.Tensor:
    """(H, M, S) causal attention of sample ``b``'s query positions ``rows`` (M,) over its
    sequence. q: (B, H, S, d); k: (B, Hkv, S, d); mask: (S,) 1 for real tokens."""
    h, s = q.shape[1], q.shape[2]
    query = q[b][:, rows].float()  # (H, M, d)
    keys = k[b].repeat_interleave(h // k.shape[1], dim=0).float()  # (H, S, d)
    logits = torch.einsum("hmd,hsd->hms", query, keys) * scaling
    columns = torch.arange(s, device=q.device)
    valid = (mask[None, :] > 0) & (columns[None, :] <= rows[:, None])  # (M, S)
    return torch.softmax(logits.masked_fill(~valid[None], -math.inf), dim=-1)


def _to_device(pending: dict, device: torch.device) -> dict:
    """``pending`` (spans, padding mask, captured signals) with its tensors on ``device``."""
    out = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in pending.items()}
    out["spans"] = [[Span(s.positions.to(device), s.grid, s.kind) for s in spans] for spans in pending["spans"]]
    if "token_index" in out:
        out["token_index"] = [[t.to(device) for t in row] for row in out["token_index"]]
    return out


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _mask_2d(mask, input_ids) -> torch.Tensor:
    """The (B, S) padding mask (1 = real token) of a prefill."""
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.to(torch.long)
    if mask is not None:
        raise ValueError("pruning needs a 2-D attention_mask (or none), got "
                         f"{type(mask).__name__} {getattr(mask, 'shape', '')}")
    return torch.ones_like(input_ids, dtype=torch.long)


def _gather_seq(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B or 1, S, d) gathered along S with index (B, S')."""
    x = x.expand(index.shape[0], -1, -1)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _gather_last(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (..., B or 1, S) gathered along its last axis with index (B, S')."""
    x = x.expand(*x.shape[:-2], index.shape[0], x.shape[-1])
    return x.gather(-1, index.expand(*x.shape[:-2], *index.shape))


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
