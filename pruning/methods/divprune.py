"""DivPrune (Alvar et al., CVPR 2025): max-min diversity on the visual embeddings.

Runs before the LLM (layer 0) on the projector's output. Distance is cosine distance
``1 - cos``. The first token is the one whose nearest other token is farthest; each
next token maximises its minimum distance to the tokens chosen so far.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Selection, register

# Rows of the N x N distance matrix computed at once when finding the first token.
_CHUNK = 4096


# No configurable parameters beyond num_retain and layer.
PARAMS: dict = {}


@register("divprune", signals=("embeddings",), default_layer=0, params=PARAMS)
def select(embeddings: torch.Tensor, num_retain: int) -> Selection:
    """Keep ``min(R, N)`` mutually diverse tokens.

    Args:
        embeddings: (N, D) visual embeddings of one span.
        num_retain: R.
    Returns:
        Selection with ``keep`` ascending; argmax ties go to the lower index.

    Example: embeddings [[1,0],[1,0.01],[0,1]], R=2 -> first token 2 (its nearest
    neighbour is farthest), then 0 -> keep [0, 2].
    """
    checks.matrix("embeddings", embeddings)
    checks.positive_int("num_retain", num_retain)
    n = embeddings.shape[0]
    count = min(num_retain, n)
    if count == n:
        return Selection(torch.arange(n, device=embeddings.device))
    unit = F.normalize(embeddings.float(), dim=1, eps=1e-8)  # (N, D)

    nearest = torch.empty(n, device=unit.device)
    for lo in range(0, n, _CHUNK):
        dist = 1.0 - unit[lo:lo + _CHUNK] @ unit.T  # (chunk, N)
        rows = torch.arange(lo, min(lo + _CHUNK, n), device=unit.device)
        dist[rows - lo, rows] = float("inf")  # a token is not its own neighbour
        nearest[lo:lo + _CHUNK] = dist.min(dim=1).values

    chosen = torch.empty(count, dtype=torch.long, device=unit.device)
    chosen[0] = torch.argmax(nearest)
    min_dist = 1.0 - unit @ unit[chosen[0]]  # (N,)
    min_dist[chosen[0]] = -float("inf")
    for step in range(1, count):
        nxt = torch.argmax(min_dist)
        chosen[step] = nxt
        min_dist = torch.minimum(min_dist, 1.0 - unit @ unit[nxt])
        min_dist[nxt] = -float("inf")  # chosen tokens stay at -inf through the minimum
    return Selection(torch.sort(chosen).values)
