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

    def __post_init__(self):
        known = list_methods() + [NO_PRUNING]
        if not isinstance(self.method, str) or self.method not in known:
            raise ValueError(f"method must be one of {', '.join(known)}; got {self.method!r}")
        if self.method == NO_PRUNING:
            self._check_none()
            return
        spec = get_method(self.method)
        rate, count = self.pruning_rate, self.num_retain
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
        layer = spec.default_layer if self.layer is None else self.layer
        if not _is_int(layer) or layer < spec.min_layer:
            raise ValueError(f"layer must be an integer >= {spec.min_layer} for {self.method} "
                             f"(0 = on the visual embeddings), got {layer!r}")
        object.__setattr__(self, "layer", int(layer))
        object.__setattr__(self, "params", FrozenParams(_checked_params(spec, self.params)))

    def _check_none(self) -> None:
        if not (self.pruning_rate is None or (_is_real(self.pruning_rate) and self.pruning_rate == 0)):
            raise ValueError(f"pruning_rate must be unset or 0 for method 'none' (no pruning), "
                             f"got {self.pruning_rate!r}")
        for name in ("num_retain", "layer"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} must be unset for method 'none' (no pruning), "
                                 f"got {getattr(self, name)!r}")
        if self.params:
            raise ValueError(f"params must be empty for method 'none' (no pruning), got {dict(self.params)}")
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

    def num_retain_for(self, n_tokens: int) -> int:
        """R for a span of ``n_tokens`` visual tokens.

        ``round(N * (1 - pruning_rate))``, at least 1 when N >= 1 (576 at 0.889 -> 64;
        Python's round: halves go to the even neighbour), or ``min(num_retain, N)``.
        """
        if not _is_int(n_tokens) or n_tokens < 0:
            raise ValueError(f"n_tokens must be an integer >= 0, got {n_tokens!r}")
        if self.method == NO_PRUNING:
            return n_tokens
        if self.num_retain is not None:
            return min(self.num_retain, n_tokens)
        return min(n_tokens, max(1, round(n_tokens * (1.0 - self.pruning_rate)))) if n_tokens else 0

    def validate(self, num_layers: Optional[int] = None) -> PruningConfig:
        """Check ``layer`` against an LLM of ``num_layers`` decoder layers; returns self.

        The layer must lie in [min_layer, num_layers - 1] (min_layer is 1 for methods that
        read layer K-1, 0 otherwise).
        """
        if num_layers is None or self.method == NO_PRUNING:
            return self
        low = get_method(self.method).min_layer
        if not low <= self.layer <= num_layers - 1:
            raise ValueError(f"layer must be in [{low}, {num_layers - 1}] for {self.method} on a model with "
                             f"{num_layers} decoder layers, got {self.layer}")
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
        """Every field, ``params`` as a plain dict; ``from_dict`` reads it back."""
        return {"method": self.method, "pruning_rate": self.pruning_rate, "num_retain": self.num_retain,
                "layer": self.layer, "params": dict(self.params)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Union[str, int, float]]:
        """One level of str/number values for experiment tracking; unset fields are left out.

        Example: ``{"method": "vlm_pruner", "pruning_rate": 0.889, "layer": 2,
        "params.merge_weight": 0.3, ..., "params.token_batch": 16}``.
        """
        out = {k: v for k, v in self.to_dict().items() if k != "params" and v is not None}
        out.update({f"params.{name}": value for name, value in self.params.items()})
        return out


def _checked_params(spec: MethodSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` checked against the method's schema, defaults filled in."""
    if not isinstance(given, Mapping):
        raise ValueError(f"params must be a mapping of parameter names to values, got {given!r}")
    for name in given:
        if name not in spec.params:
            known = (f"its parameters: {', '.join(sorted(spec.params))}" if spec.params
                     else f"{spec.name} takes no parameters")
            raise ValueError(f"params.{name} is not a parameter of {spec.name} ({known}; top-level fields: "
                             "method, pruning_rate, num_retain, layer)")
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
