"""Pruning methods, found by name.

A method is a pure function from tensors to a :class:`Selection`; it knows nothing of
models, configs or I/O. Each lives in its own module and registers itself here with
:func:`register`, which refuses a name that is already taken.

A method's ``signals`` are its argument contract: the engine (``pruning.engine``) calls
``select(**{signal: value for signal in signals}, num_retain=R, **params)`` per visual
span, computing only the signals some method asks for. So adding a method is one new
module; no method name appears in the engine or the pipeline. The signals the engine
provides are :data:`SIGNALS`; ``register`` refuses a signal outside it, or one that
``select`` does not take by that name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Union

import torch


# What the engine gives a method, per span of N visual tokens in a sequence of S tokens,
# at the pruning layer K (for K = 0: the embeddings after the projector).
SIGNALS = {
    "hidden_states": "(N, D) the span's hidden states entering layer K",
    "embeddings": "(N, D) the same states, named as embedding-space methods read them",
    "normed_hidden_states": "(N, D) those states after the model's final norm",
    "key_states": "(N, kv_heads * d) the span's rotary keys of layer K-1 (K >= 1)",
    "attention": "(heads, N) the last prompt token's attention to the span in layer K-1 (K >= 1)",
    "layer_attention": "(heads, N) the last prompt token's attention to the span computed with layer K's own "
                       "input norm and query/key projections on the states entering layer K (PyramidDrop)",
    "text_key_states": "(M, kv_heads * d) rotary keys of layer K-1 of the text tokens after the span",
    "text_normed_hidden_states": "(M, D) final-normed states of those text tokens",
    "text_hidden_states": "(M, D) states entering layer K of those text tokens (K = 0: their input embeddings)",
    "input_embeddings": "(N, D) the span's tokens as the LLM was given them: the states entering decoder "
                        "layer 0 (at any K; the survivors' rows at later stages)",
    "text_input_embeddings": "(M, D) the same for the text tokens after the span (their token embeddings)",
    "text_attention": "(heads, M, N) attention of each of those text tokens to the span in layer K-1 (K >= 1)",
    "vision_attention": "(N,) attention each of the span's tokens receives in the vision encoder "
                        "(pruning.vision: CLS row, or mean over queries, of the family's chosen layer)",
    "vision_keys": "(N, Dk) the span's keys in that vision encoder layer (heads concatenated)",
    "token_index": "(N,) each token's raster index in the span's original grid (arange(N) at the first "
                   "stage; the survivors' indices at later stages of progressive pruning)",
    "grid": "(T, H, W) the span's token grid (frames, rows, columns)",
    "num_tokens": "N",
    "device": "the device the span's states are on",
}


@dataclass(frozen=True)
class Selection:
    """The visual tokens a method keeps from one span of N tokens.

    keep:           (R,) int64, indices into the span, sorted ascending.
    hidden_states:  (R, D) the kept tokens' states in ``keep`` order after any fusion,
                    or None when the method leaves the kept states unchanged.
    """

    keep: torch.Tensor
    hidden_states: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a method: its type, default, inclusive range and meaning.

    Only a description: ``pruning.config.PruningConfig`` validates configured values
    against it, and each ``select`` checks its own arguments.
    """

    kind: type  # int or float
    default: Union[int, float]
    help: str
    low: Optional[float] = None
    high: Optional[float] = None

    def allowed(self) -> str:
        """The allowed values in words, e.g. "an integer >= 1" or "a number in [0, 1]"."""
        kind = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{kind} >= {self.low:g}"
        if self.high is not None:
            return f"{kind} <= {self.high:g}"
        return kind


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    name:           the name configs use.
    select:         the pure selection function.
    signals:        the inputs the model wiring must supply (documented per method).
    default_layer:  decoder layer to prune before (0 = on the visual embeddings).
    min_layer:      the smallest layer the method can run at.
    params:         the method's configurable keyword parameters by name (read-only).
    warm_up:        called with the device name before the method's first timed use in a
                    process (compiled kernels), or None.
    default_stages: the layers a progressive method prunes before when a config names
                    neither ``layer`` nor ``stages`` (None: one stage at default_layer).
    """

    name: str
    select: Callable[..., Selection]
    signals: tuple[str, ...]
    default_layer: int
    min_layer: int
    params: Mapping[str, Param] = field(default_factory=lambda: MappingProxyType({}))
    warm_up: Optional[Callable[[str], None]] = None
    default_stages: Optional[tuple[int, ...]] = None


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, *, signals: tuple[str, ...], default_layer: int, min_layer: int = 0,
             params: Optional[Mapping[str, Param]] = None, warm_up: Optional[Callable[[str], None]] = None,
             default_stages: Optional[tuple[int, ...]] = None):
    """Decorator: register ``select`` under ``name``; a duplicate name is an error.

    ``signals`` name ``select``'s arguments the engine fills (from :data:`SIGNALS`);
    ``params`` describes the keyword parameters a config may set (the module's ``PARAMS``).
    """

    def wrap(select: Callable[..., Selection]) -> Callable[..., Selection]:
        if name in _REGISTRY:
            raise ValueError(f"pruning method {name!r} is already registered")
        takes = inspect.signature(select).parameters
        for signal in signals:
            if signal not in SIGNALS:
                raise ValueError(f"pruning method {name!r}: unknown signal {signal!r}; the engine provides "
                                 f"{', '.join(SIGNALS)}")
            if signal not in takes:
                raise ValueError(f"pruning method {name!r}: select takes no argument {signal!r} for its signal")
        for needed in ("num_retain", *(params or {})):
            if needed not in takes:
                raise ValueError(f"pruning method {name!r}: select takes no argument {needed!r}")
        _REGISTRY[name] = MethodSpec(name, select, tuple(signals), default_layer, min_layer,
                                     MappingProxyType(dict(params or {})), warm_up,
                                     tuple(default_stages) if default_stages else None)
        return select

    return wrap


def get_method(name: str) -> MethodSpec:
    """The method registered as ``name``; unknown names list the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown pruning method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_methods() -> list[str]:
    return sorted(_REGISTRY)
