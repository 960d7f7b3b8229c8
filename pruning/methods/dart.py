"""DART (Wen et al., 2025): pivots claim the visual tokens least similar to them.

Pivots are the visual tokens with the largest key L1 norm (layer K-1 keys) plus the
text tokens after the span with the largest key L1 norm. Similarity is cosine between
hidden states after the model's final norm. Pivots take turns, visual pivots by
descending norm then text pivots, each claiming its quota of the still-unclaimed
visual tokens least similar to itself.

The authors give each of the 8 pivots floor(R / 8) tokens and drop the text pivots,
keeping 4 + 8 * floor(R / 8) tokens (68 for R = 64). Per the spec we instead split the
R - 4 remaining slots over the pivots, the first pivots taking the remainder, so that
exactly R are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Param, Selection, register

PARAMS = {
    "num_visual_pivots": Param(int, 4, "visual pivots: the span's tokens with the largest key L1 norm",
                               low=1),
    "num_text_pivots": Param(int, 4, "text pivots: the following text tokens with the largest key L1 norm",
                             low=1),
}


@register("dart", signals=("key_states", "normed_hidden_states", "text_key_states",
                           "text_normed_hidden_states"), default_layer=2, min_layer=1, params=PARAMS)
def select(key_states: torch.Tensor, normed_hidden_states: torch.Tensor, num_retain: int, *,
           text_key_states: torch.Tensor | None = None,
           text_normed_hidden_states: torch.Tensor | None = None,
           num_visual_pivots: int = 4, num_text_pivots: int = 4) -> Selection:
    """Keep ``min(R, N)`` tokens: the visual pivots plus the tokens the pivots claim.

    Args:
        key_states: (N, Dk) layer K-1 keys of the span's visual tokens.
        normed_hidden_states: (N, D) the span's layer K-1 outputs after the final norm.
        num_retain: R.
        text_key_states: (M, Dk) keys of the text tokens after the span (M may be 0).
        text_normed_hidden_states: (M, D) their states after the final norm.
        num_visual_pivots, num_text_pivots: 4 and 4 in the paper.
    Returns:
        Selection with ``keep`` ascending.

    With R < num_visual_pivots only the R highest-norm visual tokens are kept; with no
    text tokens the slots are split over the visual pivots alone.
    """
    checks.matrix("key_states", key_states)
    n = key_states.shape[0]
    hidden_states, text_hidden_states = normed_hidden_states, text_normed_hidden_states
    checks.matrix("normed_hidden_states", hidden_states, rows=n)
    checks.positive_int("num_retain", num_retain)
    checks.positive_int("num_visual_pivots", num_visual_pivots)
    checks.positive_int("num_text_pivots", num_text_pivots)
    device = key_states.device
    if text_key_states is None or text_key_states.shape[0] == 0:
        text_key_states = key_states.new_zeros(0, key_states.shape[1])
        text_hidden_states = hidden_states.new_zeros(0, hidden_states.shape[1])
    else:
        checks.matrix("text_key_states", text_key_states)
        checks.matrix("text_normed_hidden_states", text_hidden_states, rows=text_key_states.shape[0])
    count = min(num_retain, n)
    if count == n:
        return Selection(torch.arange(n, device=device))

    by_norm = torch.sort(key_states.float().abs().sum(dim=1), descending=True, stable=True).indices
    visual_pivots = by_norm[: min(num_visual_pivots, count)]
    text_norm = text_key_states.float().abs().sum(dim=1)
    text_pivots = torch.sort(text_norm, descending=True, stable=True).indices[:num_text_pivots]

    unit = F.normalize(hidden_states.float(), dim=1, eps=1e-8)  # (N, D)
    pivot_units = torch.cat([unit[visual_pivots],
                             F.normalize(text_hidden_states.float()[text_pivots], dim=1, eps=1e-8)])
    slots = count - visual_pivots.numel()
    quota = [slots // len(pivot_units) + (1 if i < slots % len(pivot_units) else 0)
             for i in range(len(pivot_units))]

    claimed = torch.zeros(n, dtype=torch.bool, device=device)
    claimed[visual_pivots] = True
    for pivot, take in zip(pivot_units, quota):
        if take == 0:
            continue
        sim = unit @ pivot  # (N,)
        sim[claimed] = float("inf")
        claimed[torch.sort(sim, stable=True).indices[:take]] = True
    return Selection(claimed.nonzero().squeeze(1))
