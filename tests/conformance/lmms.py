"""lmms-eval's own task code, imported from the installed package (a locked test
dependency: requirements.lock, pyproject's test extra) for the conformance tests.

lmms-eval is installed without its dependencies (pyproject.toml, tool.uv.dependency-metadata).
Its task modules (``lmms_eval/tasks/<name>/utils.py``) need only loguru, pandas, numpy,
yaml, requests, datasets and cv2, all locked; what they do not need is
``lmms_eval/tasks/__init__.py``, the TaskManager, whose imports reach the whole harness
(accelerate, hf evaluate, sacrebleu, ...). So :func:`utils` registers a bare package object
for ``lmms_eval.tasks`` (its real folder as ``__path__``: the submodules are the
package's own files, unchanged) before importing them, and ``api/metrics.py`` (GQA's
``exact_match``) gets a no-op stand-in for the metric registry it decorates with.

Configs are read from the task yaml files themselves (``!function`` lines kept as
markers, ``include:`` followed), and the prompt kwargs and generation kwargs resolved as
``lmms_eval/api/task.py`` resolves them for a model without its own entry.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any, Optional

import yaml

DISTRIBUTION = "lmms-eval"


def root() -> Path:
    """The installed ``lmms_eval`` package folder."""
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lmms-eval is not installed; it is a locked test dependency: "
                          "pip install --require-hashes --no-deps -r requirements.lock")
    return Path(list(spec.submodule_search_locations)[0])


def version() -> str:
    return importlib.metadata.version(DISTRIBUTION)


def _bare_package(name: str, folder: Path) -> None:
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        module.__package__ = name
        sys.modules[name] = module


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def utils(task_dir: str, module: str = "utils", hf_home: Optional[str] = None) -> types.ModuleType:
    """``lmms_eval.tasks.<task_dir>.<module>``, imported from the installed package.

    ``hf_home``: $HF_HOME while the module is first imported (NExTQA's reads it at import)."""
    _bare_package("lmms_eval.tasks", root() / "tasks")
    with _env(HF_HOME=hf_home or os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")):
        return importlib.import_module(f"lmms_eval.tasks.{task_dir}.{module}")


def metrics() -> types.ModuleType:
    """``lmms_eval.api.metrics`` (the registered metrics, e.g. ``exact_match_hf_evaluate``)."""
    _bare_package("lmms_eval.api", root() / "api")
    if "lmms_eval.api.registry" not in sys.modules:
        registry = types.ModuleType("lmms_eval.api.registry")
        registry.register_metric = lambda **kwargs: (lambda fn: fn)
        registry.register_aggregation = lambda name: (lambda fn: fn)
        sys.modules["lmms_eval.api.registry"] = registry
    if "sacrebleu" not in sys.modules and importlib.util.find_spec("sacrebleu") is None:
        sys.modules["sacrebleu"] = types.ModuleType("sacrebleu")  # used by BLEU metrics only
    return importlib.import_module("lmms_eval.api.metrics")


# Our task -> (lmms-eval task folder, its yaml): the lmms-eval task each of ours follows.
TASKS = {
    "mme": ("mme", "mme.yaml"),
    "pope": ("pope", "pope.yaml"),
    "gqa": ("gqa", "gqa.yaml"),
    "mmbench": ("mmbench", "mmbench_en_dev.yaml"),
    "scienceqa_img": ("scienceqa", "scienceqa_img.yaml"),
    "textvqa": ("textvqa", "textvqa_val.yaml"),
    "okvqa": ("ok_vqa", "ok_vqa_val2014.yaml"),
    "ocrbench": ("ocrbench", "ocrbench.yaml"),
    "seedbench": ("seedbench", "seedbench.yaml"),
    "egoschema": ("egoschema", "egoschema_subset.yaml"),
    "nextqa": ("nextqa", "nextqa_mc_test.yaml"),
    "videomme": ("videomme", "videomme.yaml"),
    "videomme_subtitles": ("videomme", "videomme_w_subtitle.yaml"),
    "egoplan": ("egoplan", "egoplan.yaml"),
}


def task_config(task: str) -> dict[str, Any]:
    """The yaml config of the lmms-eval task our ``task`` follows."""
    return copy.deepcopy(_task_config(task))


@functools.cache
def _task_config(task: str) -> dict[str, Any]:
    return config(*TASKS[task])


@functools.cache
def function(task: str, key: str, hf_home: Optional[str] = None):
    """The function a task yaml names under ``key`` (``!function en_utils.mmbench_doc_to_text``),
    or for ``metric_list`` entries ``key`` = ``"metric:<name>"``, that metric's aggregation."""
    cfg = _task_config(task)
    if key.startswith("metric:"):
        (value,) = [m["aggregation"] for m in cfg["metric_list"] if m["metric"] == key.split(":", 1)[1]]
    else:
        value = cfg[key]
    if not (isinstance(value, str) and value.startswith("!function ")):
        raise ValueError(f"{task}: {key} is {value!r}, not a function")
    module, name = value.split(" ", 1)[1].rsplit(".", 1)
    return getattr(utils(TASKS[task][0], module, hf_home), name)


class _Loader(yaml.SafeLoader):
    """Reads ``!function utils.fn`` as the marker string ``"!function utils.fn"``."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def config(task_dir: str, file: str) -> dict[str, Any]:
    """A task yaml, with the files it ``include``s merged in first (lm-eval's rule: the
    including file's keys win)."""
    path = root() / "tasks" / task_dir / file
    values = yaml.load(path.read_text(), Loader=_Loader) or {}
    if "include" in values:
        base = config(task_dir, values.pop("include"))
        values = {**base, **values}
    return values


def prompt_kwargs(cfg: dict) -> Optional[dict]:
    """``lmms_eval_specific_kwargs`` as ``ConfigurableTask`` hands them to ``doc_to_text`` for
    a model with no entry of its own: the whole mapping, updated with its "default" entry."""
    kwargs = cfg.get("lmms_eval_specific_kwargs")
    if kwargs is None:
        return None
    kwargs = dict(kwargs)
    if "default" in kwargs:
        kwargs.update(kwargs["default"])
    return kwargs


def generation(cfg: dict) -> tuple[Optional[int], tuple[str, ...]]:
    """(max_new_tokens or None, until) as ``TaskConfig.__post_init__`` settles them: a task
    that names no ``until`` stops at its few-shot delimiter, "\\n\\n"."""
    kwargs = cfg.get("generation_kwargs")
    delimiter = cfg.get("fewshot_delimiter", "\n\n")
    if kwargs is None:
        return None, (delimiter,)
    until = kwargs.get("until", [delimiter])
    return kwargs.get("max_new_tokens"), tuple([until] if isinstance(until, str) else until)
