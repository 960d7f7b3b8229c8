"""Random baseline: R tokens drawn uniformly without replacement from a seeded generator."""

from __future__ import annotations

import torch

from pruning.methods import checks
from pruning.methods.registry import Param, Selection, register

PARAMS = {"seed": Param(int, 0, "seed of the generator that draws the kept tokens", low=0)}


@register("random", signals=("num_tokens", "device"), default_layer=0, params=PARAMS)
def select(num_tokens: int, num_retain: int, *, seed: int = 0,
           device: torch.device | str = "cpu") -> Selection:
    """Keep ``min(R, N)`` tokens chosen at random; the same seed gives the same tokens.

    Args:
        num_tokens: N, tokens in the span.
        num_retain: R.
        seed: generator seed (the generator is always created on the CPU, so the choice
            does not depend on the device).
    Returns:
        Selection with ``keep`` (min(R, N),) ascending, on ``device``.
    """
    checks.positive_int("num_tokens", num_tokens)
    checks.positive_int("num_retain", num_retain)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num_tokens, generator=generator)[: min(num_retain, num_tokens)]
    return Selection(torch.sort(chosen).values.to(device))
