"""Uniform baseline: R tokens on an even spatial stride over the grid (per frame for video)."""

from __future__ import annotations

import math

import torch

from pruning.methods import checks
from pruning.methods.registry import Selection, register


# No configurable parameters beyond num_retain and layer.
PARAMS: dict = {}


@register("uniform", signals=("grid", "device"), default_layer=0, params=PARAMS)
def select(grid: tuple[int, int, int], num_retain: int, *,
           device: torch.device | str = "cpu") -> Selection:
    """Keep ``min(R, N)`` tokens spread evenly over each frame.

    The budget is split over the T frames (the first ``R % T`` frames take one more).
    In a frame of H x W taking r tokens, ``rows = round(sqrt(r * H / W))`` rows (at least
    ``ceil(r / W)``, at most ``min(H, r)``) sit at the centres of H/rows-high bands, and
    each row's tokens at the centres of equal-width bands.

    Example: grid (1, 4, 4), R = 4 -> rows 1 and 3, columns 1 and 3 -> keep [5, 7, 13, 15].
    """
    t, h, w = checks.grid_shape("grid", grid)
    checks.positive_int("num_retain", num_retain)
    count = min(num_retain, t * h * w)
    keep = []
    for frame in range(t):
        r = count // t + (1 if frame < count % t else 0)
        keep.extend(frame * h * w + i for i in _frame_positions(h, w, r))
    return Selection(torch.tensor(sorted(keep), dtype=torch.long, device=device))


def _frame_positions(h: int, w: int, r: int) -> list[int]:
    """Raster indices of r evenly spread cells of an h x w frame."""
    if r == 0:
        return []
    rows = min(h, r, max(math.ceil(r / w), round(math.sqrt(r * h / w)), 1))
    positions = []
    for j in range(rows):
        y = int((j + 0.5) * h / rows)
        per_row = r // rows + (1 if j < r % rows else 0)
        positions.extend(y * w + int((i + 0.5) * w / per_row) for i in range(per_row))
    return positions

