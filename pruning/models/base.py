"""What a model family tells the pruning engine: where its visual spans are.

A family file (qwen2_vl.py, llava.py, ...) maps a model's inputs to visual spans
using ``input_ids`` and the processor's grid tensors, never fixed offsets, and names
the modules the engine hooks. Families are looked up by the config's ``model_type``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Span:
    """One image or video of one sample.

    positions: (N,) sequence indices of the span's tokens in raster (t, y, x) order.
    grid:      (T, H, W) LLM-side token grid, T * H * W == N.
    kind:      "image" or "video".
    """

    positions: torch.Tensor
    grid: tuple[int, int, int]
    kind: str

    @property
    def num_tokens(self) -> int:
        return int(self.positions.numel())


class Family:
    """Base class: subclasses set ``model_types`` and implement ``spans``."""

    model_types: tuple[str, ...] = ()
    # model.forward arguments ``spans`` reads (checked by pruning.seams before hooking).
    input_names: tuple[str, ...] = ()

    def text_model(self, model: nn.Module) -> nn.Module:
        """The language model: has ``.layers`` (decoder layers) and ``.norm`` (final norm)."""
        return model.model.language_model

    def spans(self, model: nn.Module, input_ids: torch.Tensor, inputs: dict) -> list[list[Span]]:
        """Visual spans of every sample of a (B, S) batch, in order of appearance."""
        raise NotImplementedError

    def install(self, model: nn.Module, handle) -> list:
        """Family-specific seams (e.g. Qwen3-VL DeepStack); returns hook handles to remove."""
        return []

    def vision_hooks(self, model: nn.Module, record) -> list:
        """Hooks that call ``record(items)`` with one ``pruning.vision.VisionItem`` per LLM
        span each time the vision encoder runs (see ``pruning.vision``); returns them."""
        raise ValueError(f"vision signals are not available for {type(model).__name__}")


def spans_from_tokens(input_ids: torch.Tensor, token_id: int, grids: Sequence[tuple[int, int, int]],
                      kind: str) -> list[list[Span]]:
    """Assign the batch's grids, in order, to the placeholder tokens of each sample.

    Each grid takes the next T*H*W placeholder positions of the current sample, so a
    span may be split by other tokens (Qwen3-VL puts timestamps between video frames).

    Example: ids [[t, v, v, v, v, t]], grids [(1, 2, 2)] -> one span at positions [1, 2, 3, 4].
    """
    grids = [tuple(int(v) for v in g) for g in grids]
    queue = list(grids)
    batch: list[list[Span]] = []
    for b, row in enumerate(input_ids):
        positions = (row == token_id).nonzero().squeeze(1)
        spans, used = [], 0
        while used < positions.numel():
            if not queue:
                raise ValueError(
                    f"sample {b} has {positions.numel()} {kind} placeholder tokens but the {kind} "
                    f"grids of the batch cover only {used} of them")
            grid = queue.pop(0)
            count = grid[0] * grid[1] * grid[2]
            if used + count > positions.numel():
                raise ValueError(
                    f"sample {b}: a {kind} of grid {grid} needs {count} placeholder tokens but only "
                    f"{positions.numel() - used} remain")
            spans.append(Span(positions[used:used + count], grid, kind))
            used += count
        batch.append(spans)
    if queue:
        raise ValueError(f"{len(queue)} {kind} grids have no placeholder tokens in input_ids")
    return batch


def merge_spans(*per_kind: list[list[Span]]) -> list[list[Span]]:
    """Per-sample union of span lists (e.g. images and videos), ordered by position."""
    merged = [sum(samples, []) for samples in zip(*per_kind)]
    return [sorted(spans, key=lambda s: int(s.positions[0])) for spans in merged]


class InstanceAttribute:
    """Undo handle for a method overridden on one instance (a thin, removable seam).

    ``previous`` is the instance attribute the override replaced (another seam's wrapper,
    e.g. pipeline.prefix's under the engine's), restored on removal; None: the class's."""

    def __init__(self, obj, name: str, value, previous=None):
        self.obj, self.name, self.value, self.previous = obj, name, value, previous

    def remove(self) -> None:
        if self.obj.__dict__.get(self.name) is self.value:
            if self.previous is not None:
                setattr(self.obj, self.name, self.previous)
            else:
                delattr(self.obj, self.name)


def override_encoders(base, make) -> list[InstanceAttribute]:
    """Override ``get_image_features`` / ``get_video_features`` on the instance ``base``
    (those it has) with ``make(modality, original)``, keeping the original's signature
    (``generate`` inspects it) and any override already there under the new one. Returns
    the undo handles."""
    undo = []
    for modality in ("image", "video"):
        name = f"get_{modality}_features"
        original = getattr(base, name, None)
        if original is None:
            continue
        wrapper = functools.wraps(original)(make(modality, original))
        previous = base.__dict__.get(name)
        setattr(base, name, wrapper)
        undo.append(InstanceAttribute(base, name, wrapper, previous))
    return undo


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    for model_type in family.model_types:
        if model_type in _FAMILIES:
            raise ValueError(f"a model family for {model_type!r} is already registered")
        _FAMILIES[model_type] = family
    return family


def family_for(model: nn.Module) -> Family:
    model_type = getattr(model.config, "model_type", None)
    try:
        return _FAMILIES[model_type]
    except KeyError:
        raise ValueError(f"pruning does not support model type {model_type!r}; supported: "
                         f"{', '.join(sorted(_FAMILIES))}") from None
