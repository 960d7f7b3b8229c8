"""FastV (Chen et al., 2024): keep the visual tokens the last prompt token attends to most.

The model wiring computes that one attention row at layer K-1 from the layer's query
and key projections (rotary applied), so FastV also runs under SDPA / flash attention.
"""

from __future__ import annotations

import torch

from pruning.methods import checks
from pruning.methods.registry import Selection, register


# No configurable parameters beyond num_retain and layer.
PARAMS: dict = {}


@register("fastv", signals=("attention",), default_layer=2, min_layer=1, params=PARAMS)
def select(attention: torch.Tensor, num_retain: int) -> Selection:
    """Keep the R tokens with the highest head-averaged attention.

    Args:
        attention: (heads, N) or (N,) attention of the last prompt token to the span's
            tokens at layer K-1 (softmax over the whole sequence, any head count).
        num_retain: R.
    Returns:
        Selection with ``keep`` (min(R, N),) ascending; ties go to the lower index.

    Example: attention [[.1, .4, .2, .3]], R=2 -> keep [1, 3].
    """
    if attention.dim() == 1:
        attention = attention[None]
    checks.matrix("attention", attention)
    checks.positive_int("num_retain", num_retain)
    scores = attention.float().mean(dim=0)  # (N,)
    count = min(num_retain, scores.numel())
    ranked = torch.sort(scores, descending=True, stable=True).indices
    return Selection(torch.sort(ranked[:count]).values)
