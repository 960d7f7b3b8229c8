"""Argument checks shared by the selection functions; every error names its argument."""

from __future__ import annotations

from typing import Sequence

import torch


def positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def non_negative(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def in_range(name: str, value: float, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def matrix(name: str, value: torch.Tensor, rows: int | None = None, *,
           check_finite: bool = True) -> torch.Tensor:
    """A finite (rows, C) floating tensor.

    ``check_finite=False`` leaves the NaN/inf scan (a full pass over a large input) to
    the caller, which can test a reduction it computes anyway.
    """
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a 2-D tensor (N, D), got {shape}")
    if rows is not None and value.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per token), got {value.shape[0]}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {value.dtype}")
    if check_finite and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def grid_shape(name: str, value: Sequence[int]) -> tuple[int, int, int]:
    """A (T, H, W) token grid of positive integers."""
    try:
        t, h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three integers (T, H, W), got {value!r}") from None
    if min(t, h, w) < 1:
        raise ValueError(f"{name} entries must be >= 1, got {(t, h, w)}")
    return t, h, w


def grid(name: str, value: Sequence[int], num_tokens: int) -> tuple[int, int, int]:
    """A (T, H, W) token grid with T * H * W == num_tokens."""
    t, h, w = grid_shape(name, value)
    if t * h * w != num_tokens:
        raise ValueError(f"{name} {(t, h, w)} has {t * h * w} cells but there are {num_tokens} tokens")
    return t, h, w


def same_device(name: str, value: torch.Tensor, device: torch.device) -> None:
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but the other inputs are on {device}")
