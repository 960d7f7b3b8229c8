"""A sweep's configuration: one frozen dataclass tree read from YAML plus ``--set`` overrides.

Example (``configs/demo.yaml``)::

    model: tiny:qwen2_vl
    tasks:
      - {name: pope, data: data/samples/pope, samples: 4}
      - {name: egoschema, data: data/samples/egoschema, samples: 4}
    grid:
      methods: [vlm_pruner, fastv, random]        # plus the unpruned baseline, always
      pruning_rates: [0.667, 0.778, 0.889]
      layers: [2]                                 # optional: default each method's own
      params: {vlm_pruner: {token_batch: [8, 16]}} # optional: every combination is a point
      # also per method: layer, stages (progressive) and positions, e.g.
      #   {pyramiddrop: {stages: [[1, 2, 3]]}, divprune: {positions: [original, renumbered]}}
    resources: {actors: 1, batch_size: 4, frames: 8}
    scoring: lmms_eval                            # optional: or lenient (adds lenient/<name> metrics)
    mlflow: {experiment: demo}

The grid expands to ``none`` followed by every method x rate x layer x parameter
combination (:meth:`SweepConfig.points`; duplicates dropped), so the example without the
optional lines is 1 + 3 * 3 = 10 points. :meth:`SweepConfig.from_dict` checks the shape and
every value; :meth:`SweepConfig.check` checks it against the world (the model's config,
the task registry, the data paths). Both raise :class:`SweepConfigError` naming the field
(``grid.pruning_rates[2]``, ``tasks[0].data``, ...) and what it allows, before any work.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import yaml

from pipeline.job import Resources
from pipeline.tasks.scoring import LMMS_EVAL, SCORINGS, check_scoring, scoring_label
from pruning import PruningConfig, list_methods
from pruning.config import NO_PRUNING

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


class SweepConfigError(ValueError):
    """A bad sweep config: ``field`` is the dotted path of the entry at fault."""

    def __init__(self, field_path: str, message: str):
        super().__init__(f"{field_path}: {message}")
        self.field = field_path


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark of the sweep."""

    name: str = field(metadata={"help": "registered task (pope, mme, egoschema, ...: pipeline.tasks)"})
    data: str = field(metadata={"help": "local file/folder in the benchmark's layout, or a hub id (owner/name); "
                                        "a relative path is taken next to the config file if it exists "
                                        "there, else under the repo root"})
    limit: Optional[int] = field(default=None, metadata={"help": "first N samples only"})
    samples: Optional[int] = field(default=None, metadata={
        "help": "when data does not exist, write N generated rows there first (pipeline.samples; demos, tests)"})


@dataclass(frozen=True)
class GridSpec:
    """The pruning configurations: the baseline plus methods x rates x layers x params."""

    methods: tuple[str, ...] = field(metadata={"help": "pruning methods; the baseline 'none' is always added"})
    pruning_rates: tuple[float, ...] = field(metadata={"help": "shares of visual tokens removed, each in [0, 1)"})
    layers: tuple[int, ...] = field(default=(), metadata={
        "help": "decoder layers K to prune before, for every method (default: each method's own)"})
    params: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict, metadata={
        "help": "per method, {parameter: [values]}; every combination is a grid point. Besides the "
                "method's parameters: layer, stages (lists of layers: progressive) and positions"})


@dataclass(frozen=True)
class TrackingSpec:
    """Where results go."""

    experiment: str = field(metadata={"help": "MLflow experiment (default: the config file's name)"})
    tracking_uri: Optional[str] = field(default=None, metadata={
        "help": "default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory"})
    artifact_location: Optional[str] = field(default=None, metadata={
        "help": "artifact root of a new experiment (default: mlruns/<experiment> beside a sqlite database)"})


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: one model, its tasks, the grid, resources and tracking."""

    model: str = field(metadata={"help": "local path, hub id or tiny:<family>"})
    tasks: tuple[TaskSpec, ...] = field(metadata={"help": "list of {name, data, limit?, samples?}"})
    grid: GridSpec = field(metadata={"help": "{methods, pruning_rates, layers?, params?}"})
    resources: Resources = field(default_factory=Resources, metadata={
        "help": "the pipeline's Resources: actors, num_gpus, batch_size, frames, max_pixels, dtype, ..."})
    mlflow: TrackingSpec = field(default_factory=lambda: TrackingSpec("sweep"),
                                 metadata={"help": "{experiment, tracking_uri?, artifact_location?}"})
    output: str = field(default="out/sweeps", metadata={
        "help": "where the workers store every answered row (a path every node sees, or a pyarrow filesystem "
                "URI such as s3://bucket/prefix); a rerun continues from what is there. Relative: under the "
                "working directory"})
    scoring: str = field(default=LMMS_EVAL, metadata={
        "help": f"{' or '.join(SCORINGS)}: lmms-eval's scoring (its release is logged), or that plus our "
                "lenient parsers' metrics as <task>/lenient/<name>"})

    @classmethod
    def from_dict(cls, values: Any, *, default_experiment: str = "sweep") -> SweepConfig:
        """A config from parsed YAML; every error is a :class:`SweepConfigError`."""
        values = _mapping(values, "config")
        _known_keys(values, cls, "")
        with _at("model"):
            model = _required(values, "model", "")
            if not isinstance(model, str) or not model:
                raise ValueError(f"must be a model spec (a path, hub id or tiny:<family>), got {model!r}")
        tasks = tuple(_task(entry, f"tasks[{i}]") for i, entry in enumerate(_list(values, "tasks", "")))
        if not tasks:
            raise SweepConfigError("tasks", "needs at least one {name, data} entry")
        names = [t.name for t in tasks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise SweepConfigError(f"tasks[{i}].name", f"task {name!r} is listed twice")
        tracking = _mapping(values.get("mlflow") or {}, "mlflow")
        _known_keys(tracking, TrackingSpec, "mlflow.")
        for key in ("experiment", "tracking_uri", "artifact_location"):
            if tracking.get(key) is not None and not isinstance(tracking[key], str):
                raise SweepConfigError(f"mlflow.{key}", f"must be a string, got {tracking[key]!r}")
        tracking = TrackingSpec(**{"experiment": default_experiment, **tracking})
        output = values.get("output", "out/sweeps")
        if not isinstance(output, str) or not output:
            raise SweepConfigError("output", f"must be a path or URI, got {output!r}")
        with _at("scoring"):
            scoring = check_scoring(values.get("scoring", LMMS_EVAL))
        config = cls(model=model, tasks=tasks, grid=_grid(_mapping(_required(values, "grid", ""), "grid")),
                     resources=_resources(_mapping(values.get("resources") or {}, "resources")), mlflow=tracking,
                     output=output, scoring=scoring)
        config.points()  # every grid point is a valid PruningConfig
        return config

    def points(self) -> list[PruningConfig]:
        """The grid's pruning configs: the baseline first, then methods x rates x layers x params."""
        grid, out = self.grid, [PruningConfig.none()]
        for method in grid.methods:
            if method == NO_PRUNING:
                continue
            names = sorted(grid.params.get(method, {}))
            combos = itertools.product(*(grid.params[method][n] for n in names))
            for rate, layer, combo in itertools.product(grid.pruning_rates, grid.layers or (None,), list(combos)):
                with _at(f"grid (method {method}, pruning_rate {rate}, layer {layer}, params "
                         f"{dict(zip(names, combo))})"):
                    point = PruningConfig.from_dict({"method": method, "pruning_rate": rate,
                                                     **({} if layer is None else {"layer": layer}),
                                                     **dict(zip(names, combo))})
                if point not in out:
                    out.append(point)
        return out

    def check(self, model_config, root: Path, base: Optional[Path] = None) -> None:
        """Check against the world: layers against ``model_config``, tasks registered,
        data present (or a hub id, or ``samples`` set to generate it)."""
        from pipeline.tasks import get_task

        for i, task in enumerate(self.tasks):
            with _at(f"tasks[{i}].name"):
                get_task(task.name)
            path = self.data_path(task, root, base)
            if path is None or (not path.exists() and task.samples):
                continue
            if not path.exists():
                raise SweepConfigError(f"tasks[{i}].data", f"{task.data!r} is no file or folder (looked at {path}) "
                                       "and no hub id (owner/name); set samples: N to generate a sample set there")
            from pipeline.cli import data_problem

            if (problem := data_problem(str(path))) is not None:
                raise SweepConfigError(f"tasks[{i}].data", problem)
        for point in self.points():
            where = (f"grid.layers[{self.grid.layers.index(point.layer)}]" if point.layer in self.grid.layers
                     else f"grid.methods[{self.grid.methods.index(point.method)}]"
                     if point.method in self.grid.methods else "grid")
            with _at(where):
                point.check_against(model_config)

    @staticmethod
    def data_path(task: TaskSpec, root: Path, base: Optional[Path] = None) -> Optional[Path]:
        """Where ``task.data`` lies (None: a hub id). Relative: next to the config file
        (``base``) when it exists there, else under ``root`` (the repo)."""
        path = Path(task.data).expanduser()
        if path.is_absolute():
            return path
        if base is not None and (base / path).exists():
            return (base / path).resolve()
        if (root / path).exists() or task.samples or not _HUB_ID.fullmatch(task.data):
            return (root / path).resolve()
        return None

    def output_uri(self) -> str:
        """:attr:`output` as the workers must see it: a URI as given, a path made absolute."""
        if "://" in self.output:
            return self.output
        return str(Path(self.output).expanduser().resolve())

    def flat(self) -> dict[str, Any]:
        """The sweep's settings in one level (what the parent run logs as params)."""
        out: dict[str, Any] = {"model": self.model, "tasks": ",".join(t.name for t in self.tasks),
                               "scoring": scoring_label(self.scoring)}
        for task in self.tasks:
            out[f"task.{task.name}.data"] = task.data
            if task.limit is not None:
                out[f"task.{task.name}.limit"] = task.limit
        out.update({"grid.methods": ",".join(self.grid.methods),
                    "grid.pruning_rates": ",".join(f"{r:g}" for r in self.grid.pruning_rates)})
        if self.grid.layers:
            out["grid.layers"] = ",".join(str(k) for k in self.grid.layers)
        for method, params in self.grid.params.items():
            for name, values in params.items():
                out[f"grid.params.{method}.{name}"] = ",".join(_text(v) for v in values)
        out.update({f"resources.{f.name}": getattr(self.resources, f.name) for f in fields(Resources)
                    if getattr(self.resources, f.name) is not None})
        return out


def load(path: Path, overrides: Sequence[str] = ()) -> SweepConfig:
    """The config in YAML file ``path`` with ``--set key=value`` overrides applied."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SweepConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SweepConfigError("--config", f"{path} is not valid YAML: {exc}") from None
    values = apply_overrides(values if values is not None else {}, overrides)
    return SweepConfig.from_dict(values, default_experiment=Path(path).stem)


def apply_overrides(values: Any, overrides: Sequence[str]) -> Any:
    """``values`` with each ``dotted.key=value`` set (value parsed as YAML; a number in the
    path indexes a list). Example: ``tasks.0.limit=2``, ``grid.pruning_rates=[0.5, 0.9]``."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SweepConfigError("--set", f"expected key=value (e.g. grid.pruning_rates=[0.5]), got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SweepConfigError(f"--set {key}", f"value is not valid YAML: {exc}") from None
        values = _set(values, key.split("."), value, key)
    return values


def describe() -> str:
    """Every key with its one-line description (for ``--help``)."""
    lines = []
    for prefix, cls in (("", SweepConfig), ("tasks[].", TaskSpec), ("grid.", GridSpec),
                        ("resources.", Resources), ("mlflow.", TrackingSpec)):
        for f in fields(cls):
            default = f" (default {f.default!r})" if f.default not in (MISSING, None, ()) else ""
            help_text = f.metadata.get("help") or _RESOURCE_HELP.get(f.name, "")
            lines.append(f"  {prefix + f.name:<28} {help_text}{default}")
    return "\n".join(lines)


_RESOURCE_HELP = {
    "actors": "model replicas (infer actors)", "num_gpus": "GPUs per actor (0 on a CPU machine)",
    "cpus_per_actor": "CPUs per actor", "batch_size": "samples per model batch",
    "frames": "frames sampled per video",
    "max_pixels": "resize video frames to at most this many pixels", "device": "cuda or cpu (default: by GPU)",
    "dtype": "model dtype, e.g. bfloat16 (default: the checkpoint's)", "threads": "torch CPU threads per actor",
    "sample_timeout_s": "a sample's read or decode longer than this kills its worker (retried, then an error row)",
    "batch_timeout_s": "a model call longer than this kills its actor (retried, then error rows)",
    "actor_start_timeout_s": "stop with an error when the actors have not started by then (0: wait)",
}


# ---------------------------------------------------------------- parsing helpers


@contextmanager
def _at(field_path: str) -> Iterator[None]:
    """Re-raise a ValueError from inside as a SweepConfigError at ``field_path``."""
    try:
        yield
    except SweepConfigError:
        raise
    except ValueError as exc:
        raise SweepConfigError(field_path, str(exc)) from None


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SweepConfigError(where, f"must be a mapping, got {value!r}")
    return value


def _required(values: Mapping, key: str, prefix: str) -> Any:
    if values.get(key) is None:
        raise SweepConfigError(prefix + key, "is required")
    return values[key]


def _list(values: Mapping, key: str, prefix: str, *, required: bool = True) -> list:
    value = _required(values, key, prefix) if required else values.get(key)
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        value = [value]  # a single value stands for a one-entry list
    return list(value)


def _known_keys(values: Mapping, cls, prefix: str) -> None:
    allowed = [f.name for f in fields(cls)]
    for key in values:
        if key not in allowed:
            raise SweepConfigError(prefix + str(key), f"unknown key; allowed: {', '.join(allowed)}")


def _positive_int(value: Any, where: str, *, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepConfigError(where, f"must be an integer >= 1, got {value!r}")
    return value


def _task(entry: Any, where: str) -> TaskSpec:
    entry = _mapping(entry, where)
    _known_keys(entry, TaskSpec, where + ".")
    for key in ("name", "data"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise SweepConfigError(f"{where}.{key}", f"must be a non-empty string, got {entry.get(key)!r}")
    return TaskSpec(name=entry["name"], data=entry["data"],
                    limit=_positive_int(entry.get("limit"), f"{where}.limit", allow_none=True),
                    samples=_positive_int(entry.get("samples"), f"{where}.samples", allow_none=True))


def _grid(values: Mapping) -> GridSpec:
    _known_keys(values, GridSpec, "grid.")
    known = list_methods() + [NO_PRUNING]
    methods = _list(values, "methods", "grid.")
    for i, method in enumerate(methods):
        if method not in known:
            raise SweepConfigError(f"grid.methods[{i}]", f"unknown method {method!r}; allowed: {', '.join(known)}")
    pruned = [m for m in methods if m != NO_PRUNING]
    rates = _list(values, "pruning_rates", "grid.", required=bool(pruned))
    for i, rate in enumerate(rates):
        with _at(f"grid.pruning_rates[{i}]"):
            PruningConfig(method=pruned[0] if pruned else list_methods()[0], pruning_rate=rate)
    layers = _list(values, "layers", "grid.", required=False)
    for i, layer in enumerate(layers):
        for method in pruned:
            with _at(f"grid.layers[{i}]"):
                PruningConfig(method=method, pruning_rate=0.5, layer=layer)
    params = _mapping(values.get("params") or {}, "grid.params")
    checked: dict[str, dict[str, tuple]] = {}
    for method, by_name in params.items():
        if method not in pruned:
            raise SweepConfigError(f"grid.params.{method}",
                                   f"{method!r} is not in grid.methods ({', '.join(pruned)})")
        checked[method] = {}
        for name in _mapping(by_name, f"grid.params.{method}"):
            options = _list(by_name, name, f"grid.params.{method}.")
            if name == "layer" and layers:
                raise SweepConfigError(f"grid.params.{method}.layer", "grid.layers is set for every method already")
            for i, value in enumerate(options):
                with _at(f"grid.params.{method}.{name}[{i}]"):
                    PruningConfig.from_dict({"method": method, "pruning_rate": 0.5, name: value})
            checked[method][name] = tuple(dict.fromkeys(_frozen(v) for v in options))
    return GridSpec(methods=tuple(dict.fromkeys(methods)),
                    pruning_rates=tuple(dict.fromkeys(float(r) for r in rates)),
                    layers=tuple(dict.fromkeys(layers)), params=checked)


def _text(value: Any) -> str:
    """A grid value as logged: 0.5, 8+16+24 (stages), renumbered."""
    if isinstance(value, tuple):
        return "+".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _frozen(value: Any) -> Any:
    """Lists (a stage list) as tuples, so that grid values are hashable."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _resources(values: Mapping) -> Resources:
    """Resources from a mapping, each value checked against the field's type."""
    _known_keys(values, Resources, "resources.")
    out = {}
    for f in fields(Resources):
        if f.name not in values:
            continue
        value, where, kind = values[f.name], f"resources.{f.name}", str(f.type)
        if value is None and kind.startswith("Optional["):
            out[f.name] = None
        elif "int" in kind:
            out[f.name] = _positive_int(value, where)
        elif "float" in kind:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SweepConfigError(where, f"must be a number >= 0, got {value!r}")
            out[f.name] = float(value)
        elif not isinstance(value, str):
            raise SweepConfigError(where, f"must be a string, got {value!r}")
        else:
            out[f.name] = value
    if out.get("dtype") is not None:
        from pipeline.models import _resolve_dtype

        with _at("resources.dtype"):
            _resolve_dtype(out["dtype"])
    if out.get("device") not in (None, "cpu", "cuda") and not str(out["device"]).startswith("cuda:"):
        raise SweepConfigError("resources.device", f"must be cpu or cuda, got {out['device']!r}")
    return Resources(**out)


def _set(node: Any, path: list[str], value: Any, key: str) -> Any:
    """``node`` with ``value`` at ``path`` (mappings are copied, lists too)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, list):
        if not head.isdigit() or int(head) >= len(node):
            raise SweepConfigError(f"--set {key}", f"{head!r} is no index of a list of {len(node)} entries")
        copy = list(node)
        copy[int(head)] = _set(node[int(head)], rest, value, key)
        return copy
    if node is None:
        node = {}
    if not isinstance(node, Mapping):
        raise SweepConfigError(f"--set {key}", f"cannot set {head!r} inside {node!r}")
    copy = dict(node)
    copy[head] = _set(node.get(head), rest, value, key)
    return copy
