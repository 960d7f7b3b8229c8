"""The pruning configuration of one run: which method, how much, where, with what parameters.

``PruningConfig`` is the single place where a configuration is validated. YAML files and
command-line overrides go through :meth:`PruningConfig.from_dict`; what gets logged is
:meth:`PruningConfig.flat`. Every error is a ``ValueError`` naming the field
(``pruning_rate``, ``layer``, ``params.token_batch``, ...) and what it allows.

Example::

    >>> cfg = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.889, "token_batch": 8})
    >>> cfg.layer, cfg.params["token_batch"], cfg.params["num_pivots"]
    (2, 8, 4)
    >>> cfg.num_retain_for(576)
    64
    >>> PruningConfig.none().flat()
    {'method': 'none'}
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import yaml

from pruning.methods import get_method, list_methods
from pruning.methods.registry import MethodSpec, Param

# The unpruned baseline: every token is kept and no method runs.
NO_PRUNING = "none"


class FrozenParams(Mapping):
    """A read-only, hashable ``{name: value}`` mapping, iterated in name order."""

    def __init__(self, values: Mapping[str, Any] = ()):
        self._items = tuple(sorted(dict(values).items()))

    def __getitem__(self, name: str) -> Any:
        for key, value in self._items:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return repr(dict(self._items))


@dataclass(frozen=True)
class PruningConfig:
    """How visual tokens are pruned in one run.

    ``method="none"`` (:data:`NO_PRUNING`, see :meth:`none`) is the unpruned baseline: it
    takes no rate, count, layer or parameters, and keeps every token.
    ``params`` always holds the method's complete parameter set, defaults filled in, so
    two configs that mean the same thing are equal and log the same ``flat()``.
    """

    method: str = field(metadata={"help": "registered method name (vlm_pruner, fastv, ...) or 'none'"})
    pruning_rate: Optional[float] = field(
        default=None, metadata={"help": "fraction of each span's visual tokens removed, in [0, 1)"})
    num_retain: Optional[int] = field(
        default=None, metadata={"help": "R, visual tokens kept per span (>= 1); instead of pruning_rate"})
    layer: Optional[int] = field(
        default=None, metadata={"help": "K, prune before this decoder layer (0 = visual embeddings); "
                                        "None = the method's default"})
    params: Mapping[str, Any] = field(
        default_factory=FrozenParams, metadata={"help": "the method's keyword parameters, by name"})
    stages: Optional[tuple] = field(
        default=None, metadata={"help": "progressive pruning: layers [2, 6, 12] (each stage keeps the same "
                                        "share of what reaches it, the last keeps R), or [layer, rate] pairs "
                                        "[[2, 0.5], [6, 0.75]] (rate: share of the span removed by then)"})
    positions: str = field(
        default="original", metadata={"help": "position ids of kept tokens: 'original' (gathered) or "
                                              "'renumbered' (0 .. L'-1 of the pruned sequence, as DivPrune's "
                                              "authors run it)"})

    def __post_init__(self):
        known = list_methods() + [NO_PRUNING]
        if not isinstance(self.method, str) or self.method not in known:
            raise ValueError(f"method must be one of {', '.join(known)}; got {self.method!r}")
        if self.method == NO_PRUNING:
            self._check_none()
            return
        spec = get_method(self.method)
        rate, count = self.pruning_rate, self.num_retain
        if rate is None and count is None and _last_pair_rate(self.stages) is not None:
            rate = _last_pair_rate(self.stages)  # [layer, rate] stages: the last one's (checked below)
        if (rate is None) == (count is None):
            raise ValueError("set exactly one of pruning_rate (in [0, 1)) and num_retain (an integer >= 1); "
                             f"got pruning_rate={rate!r}, num_retain={count!r}")
        if rate is not None:
            if not _is_real(rate) or not 0 <= rate < 1:
                raise ValueError(f"pruning_rate must be a number in [0, 1), got {rate!r}")
            object.__setattr__(self, "pruning_rate", float(rate))
        if count is not None:
            if not _is_int(count) or count < 1:
                raise ValueError(f"num_retain must be an integer >= 1, got {count!r}")
            object.__setattr__(self, "num_retain", int(count))
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        stages = self.stages
        if stages is None and self.layer is None and spec.default_stages:
            stages = spec.default_stages
        if stages is not None:
            self._set_stages(spec, stages)
            return
        layer = spec.default_layer if self.layer is None else self.layer
        if not _is_int(layer) or layer < spec.min_layer:
            raise ValueError(f"layer must be an integer >= {spec.min_layer} for {self.method} "
                             f"(0 = on the visual embeddings), got {layer!r}")
        object.__setattr__(self, "layer", int(layer))
        object.__setattr__(self, "params", FrozenParams(_checked_params(spec, self.params)))

    def _set_stages(self, spec: MethodSpec, stages) -> None:
        """Normalise ``stages`` to ((layer, cumulative rate or None), ...); one stage is no stages."""
        if isinstance(stages, (str, bytes)) or not isinstance(stages, (list, tuple)) or not stages:
            raise ValueError(f"stages must be a non-empty list of layers or of [layer, pruning_rate] pairs, "
                             f"got {stages!r}")
        pairs = [isinstance(s, (list, tuple)) for s in stages]
        if any(pairs) and not all(pairs):
            raise ValueError(f"stages must be all layers or all [layer, pruning_rate] pairs, got {stages!r}")
        out = []
        for i, stage in enumerate(stages):
            layer, rate = (stage, None) if not pairs[i] else (tuple(stage) + (None,))[:2] if len(stage) == 2 \
                else (None, None)
            if layer is None or not _is_int(layer) or layer < spec.min_layer:
                raise ValueError(f"stages[{i}] must be a layer (an integer >= {spec.min_layer} for {self.method}) "
                                 f"or a [layer, pruning_rate] pair, got {stage!r}")
            if out and layer <= out[-1][0]:
                raise ValueError(f"stages[{i}]: layers must increase, got {layer} after {out[-1][0]}")
            if pairs[i]:
                if not _is_real(rate) or not 0 <= rate < 1:
                    raise ValueError(f"stages[{i}] pruning_rate must be a number in [0, 1), got {rate!r}")
                if out and rate < out[-1][1]:
                    raise ValueError(f"stages[{i}]: pruning_rate is the share removed by then, so it cannot "
                                     f"fall ({rate} after {out[-1][1]})")
                rate = float(rate)
            out.append((int(layer), rate))
        if self.layer is not None and self.layer != out[0][0]:
            raise ValueError(f"layer ({self.layer}) must be unset or the first stage's layer ({out[0][0]})")
        if all(pairs):
            if self.num_retain is not None:
                raise ValueError("num_retain cannot be combined with [layer, pruning_rate] stages")
            if self.pruning_rate is not None and self.pruning_rate != out[-1][1]:
                raise ValueError(f"pruning_rate ({self.pruning_rate}) must be unset or the last stage's "
                                 f"({out[-1][1]})")
            object.__setattr__(self, "pruning_rate", out[-1][1])
        elif self.pruning_rate is None and self.num_retain is None:
            raise ValueError("stages given as layers need pruning_rate or num_retain (what the last stage keeps)")
        if len(out) > 1 and "grid" in spec.signals and "token_index" not in spec.signals:
            raise ValueError(f"stages: {self.method} reads the span's grid as its token order, which holds "
                             "only at the first stage (a progressive method also takes token_index)")
        object.__setattr__(self, "layer", out[0][0])
        object.__setattr__(self, "stages", tuple(out) if len(out) > 1 else None)
        object.__setattr__(self, "params", FrozenParams(_checked_params(spec, self.params)))

    def _check_none(self) -> None:
        if not (self.pruning_rate is None or (_is_real(self.pruning_rate) and self.pruning_rate == 0)):
            raise ValueError(f"pruning_rate must be unset or 0 for method 'none' (no pruning), "
                             f"got {self.pruning_rate!r}")
        for name in ("num_retain", "layer", "stages"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} must be unset for method 'none' (no pruning), "
                                 f"got {getattr(self, name)!r}")
        if self.params:
            raise ValueError(f"params must be empty for method 'none' (no pruning), got {dict(self.params)}")
        if self.positions != "original":
            raise ValueError(f"positions must be 'original' for method 'none' (no pruning), got {self.positions!r}")
        object.__setattr__(self, "pruning_rate", None)
        object.__setattr__(self, "params", FrozenParams())

    # -- the unpruned baseline ----------------------------------------------------------

    @classmethod
    def none(cls) -> PruningConfig:
        """The unpruned baseline (method 'none')."""
        return cls(NO_PRUNING)

    @property
    def is_identity(self) -> bool:
        """True when every token of every span is kept: method 'none' or pruning_rate 0."""
        return self.method == NO_PRUNING or self.pruning_rate == 0.0

    # -- use ----------------------------------------------------------------------------

    def method_params(self) -> dict[str, Any]:
        """The keyword arguments for the method's ``select`` (every parameter, defaults filled in)."""
        return dict(self.params)

    @property
    def prune_layers(self) -> tuple[int, ...]:
        """The layers pruned before, in order: one, or one per stage (``(0,)`` for 'none')."""
        if self.stages:
            return tuple(layer for layer, _ in self.stages)
        return (self.layer or 0,)

    def num_retain_for(self, n_tokens: int, stage: Optional[int] = None) -> int:
        """R for a span of ``n_tokens`` visual tokens (at the end of ``stage``; None = the last).

        ``round(N * (1 - pruning_rate))``, at least 1 when N >= 1 (576 at 0.889 -> 64;
        Python's round: halves go to the even neighbour), or ``min(num_retain, N)``.
        Progressive configs: a [layer, rate] stage keeps ``round(N * (1 - rate))``; stages
        given as layers keep ``round(N * (R / N) ** ((i + 1) / s))`` after stage i of s, the
        same share of what reaches each stage (N = 576, R = 72, three stages: 288, 144, 72).
        """
        if not _is_int(n_tokens) or n_tokens < 0:
            raise ValueError(f"n_tokens must be an integer >= 0, got {n_tokens!r}")
        if self.method == NO_PRUNING or n_tokens == 0:
            return n_tokens
        last = len(self.stages) - 1 if self.stages else 0
        stage = last if stage is None else stage
        if not 0 <= stage <= last:
            raise ValueError(f"stage must be in [0, {last}], got {stage}")
        if self.stages and self.stages[stage][1] is not None:
            return min(n_tokens, max(1, round(n_tokens * (1.0 - self.stages[stage][1]))))
        if self.num_retain is not None:
            final = min(self.num_retain, n_tokens)
        else:
            final = min(n_tokens, max(1, round(n_tokens * (1.0 - self.pruning_rate))))
        if stage == last:
            return final
        return max(final, min(n_tokens, round(n_tokens * (final / n_tokens) ** ((stage + 1) / (last + 1)))))

    def validate(self, num_layers: Optional[int] = None) -> PruningConfig:
        """Check ``layer`` against an LLM of ``num_layers`` decoder layers; returns self.

        The layer must lie in [min_layer, num_layers - 1] (min_layer is 1 for methods that
        read layer K-1, 0 otherwise).
        """
        if num_layers is None or self.method == NO_PRUNING:
            return self
        low = get_method(self.method).min_layer
        for layer in self.prune_layers:
            if not low <= layer <= num_layers - 1:
                name = "layer" if not self.stages else "stages"
                raise ValueError(f"{name} must be in [{low}, {num_layers - 1}] for {self.method} on a model "
                                 f"with {num_layers} decoder layers, got {layer}")
        return self

    def check_against(self, model_config) -> PruningConfig:
        """:meth:`validate` against a transformers config (its LLM's ``num_hidden_layers``)."""
        return self.validate(model_config.get_text_config().num_hidden_layers)

    # -- serialisation ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PruningConfig:
        """A config from a mapping, as read from YAML or a command line.

        Method parameters may sit in a nested ``params`` mapping, at top level
        (``{"method": "vlm_pruner", "pruning_rate": 0.889, "token_batch": 8}``) or as
        ``params.<name>`` keys (what :meth:`flat` writes); the same name twice is an error.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"a pruning config must be a mapping, got {type(values).__name__}")
        if "method" not in values:
            raise ValueError(f"method is required; one of {', '.join(list_methods() + [NO_PRUNING])}")
        top = {f.name for f in fields(cls)} - {"params"}
        if isinstance(values.get("stages"), str):  # what flat() writes: "2:0.5,6:0.75" or "2,6"
            values = {**values, "stages": _parse_stages(values["stages"])}
        nested = values.get("params") or {}
        if not isinstance(nested, Mapping):
            raise ValueError(f"params must be a mapping of parameter names to values, got {nested!r}")
        params = dict(nested)
        for key, value in values.items():
            if key in top or key == "params":
                continue
            name = key[len("params."):] if key.startswith("params.") else key
            if name in params:
                raise ValueError(f"params.{name} is given twice")
            params[name] = value
        return cls(params=params, **{k: v for k, v in values.items() if k in top})

    @classmethod
    def from_yaml(cls, source: Union[str, os.PathLike]) -> PruningConfig:
        """A config from a YAML file (a path) or YAML text (a string that names no file)."""
        text = Path(source).read_text() if _names_file(source) else source
        values = yaml.safe_load(text)
        if not isinstance(values, Mapping):
            raise ValueError(f"expected a YAML mapping or the path of a YAML file, got {source!r}")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Every field, ``params`` as a plain dict; ``from_dict`` reads it back. ``stages`` and
        ``positions`` appear only when set (so single-stage configs keep the keys of their
        stored results)."""
        out = {"method": self.method, "pruning_rate": self.pruning_rate, "num_retain": self.num_retain,
               "layer": self.layer, "params": dict(self.params)}
        if self.stages:
            out["stages"] = [layer if rate is None else [layer, rate] for layer, rate in self.stages]
        if self.positions != "original":
            out["positions"] = self.positions
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Union[str, int, float]]:
        """One level of str/number values for experiment tracking; unset fields are left out.

        Example: ``{"method": "vlm_pruner", "pruning_rate": 0.889, "layer": 2,
        "params.merge_weight": 0.3, ..., "params.token_batch": 16}``.
        """
        out = {k: v for k, v in self.to_dict().items() if k not in ("params", "stages") and v is not None}
        if self.method != NO_PRUNING:
            out["positions"] = self.positions
        if self.stages:
            out["stages"] = ",".join(f"{layer}" if rate is None else f"{layer}:{rate:g}" for layer, rate in self.stages)
        out.update({f"params.{name}": value for name, value in self.params.items()})
        return out


def _last_pair_rate(stages) -> Any:
    last = stages[-1] if isinstance(stages, (list, tuple)) and stages else None
    return last[1] if isinstance(last, (list, tuple)) and len(last) == 2 else None


# Position ids of the kept tokens (see the ``positions`` field).
POSITIONS = ("original", "renumbered")


def _parse_stages(text: str) -> list:
    """``"2:0.5,6:0.75"`` -> [[2, 0.5], [6, 0.75]]; ``"2,6"`` -> [2, 6] (what flat() writes)."""
    try:
        return [[int(a), float(b)] if ":" in part else int(part)
                for part in text.split(",") for a, _, b in [part.partition(":")]]
    except ValueError:
        raise ValueError(f"stages must read like '2,6' or '2:0.5,6:0.75', got {text!r}") from None


def _checked_params(spec: MethodSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` checked against the method's schema, defaults filled in."""
    if not isinstance(given, Mapping):
        raise ValueError(f"params must be a mapping of parameter names to values, got {given!r}")
    for name in given:
        if name not in spec.params:
            known = (f"its parameters: {', '.join(sorted(spec.params))}" if spec.params
                     else f"{spec.name} takes no parameters")
            raise ValueError(f"params.{name} is not a parameter of {spec.name} ({known}; top-level fields: "
                             "method, pruning_rate, num_retain, layer, stages, positions)")
    return {name: _checked_value(f"params.{name}", param, given.get(name, param.default))
            for name, param in spec.params.items()}


def _checked_value(name: str, param: Param, value: Any) -> Union[int, float]:
    ok = _is_int(value) if param.kind is int else _is_real(value)
    if ok and param.low is not None:
        ok = value >= param.low
    if ok and param.high is not None:
        ok = value <= param.high
    if not ok:
        raise ValueError(f"{name} must be {param.allowed()}, got {value!r}")
    return param.kind(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _names_file(source: Union[str, os.PathLike]) -> bool:
    if isinstance(source, os.PathLike):
        return True
    try:
        return "\n" not in source and Path(source).is_file()
    except OSError:  # e.g. a one-line YAML text too long to be a file name
        return False
