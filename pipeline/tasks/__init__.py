"""Benchmarks, one module each, registered by name (``get_task("mme")``)."""

from __future__ import annotations

import importlib
import pkgutil

from pipeline.tasks.base import Sample, Task

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Register an instance under ``task.name``; a duplicate name is an error."""
    if not task.name or task.name in _TASKS:
        raise ValueError(f"task name {task.name!r} is empty or already registered")
    _TASKS[task.name] = task
    return task


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in ("base", "common", "extract", "scoring"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_task(name: str) -> Task:
    _load_all()
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}") from None


def list_tasks() -> list[str]:
    _load_all()
    return sorted(_TASKS)


__all__ = ["Sample", "Task", "get_task", "list_tasks", "register_task"]
