"""DivPrune (Alvar et al., CVPR 2025): max-min diversity on the visual embeddings.

Runs before the LLM (layer 0) on the projector's output. Distance is cosine distance
``1 - cos``. The first token is the one whose nearest other token is farthest; each
next token maximises its minimum distance to the tokens chosen so far.

Cost: the first token needs every pairwise distance (an N x N x D product, computed
as its upper triangle and mirrored); the greedy then reads one row of that matrix per
step. Spans longer than ``_FULL_MATRIX_MAX`` tokens, whose matrix would not fit
comfortably, are processed in row chunks with one (N, D) product per step instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Selection, register

# Spans up to this many tokens keep their whole N x N distance matrix (64 MiB at the
# limit); longer ones are processed _CHUNK rows at a time.
_FULL_MATRIX_MAX = 4096
_CHUNK = 4096
# Row block of the triangular distance product: large enough for an efficient matmul,
# small enough that the skipped lower blocks are most of the lower half.
_BLOCK = 192


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
    if n <= _FULL_MATRIX_MAX:
        chosen = _greedy_full(unit, count)
    else:
        chosen = _greedy_chunked(unit, count)
    return Selection(torch.sort(chosen).values)


def _greedy_full(unit: torch.Tensor, count: int) -> torch.Tensor:
    """Max-min greedy over the whole N x N distance matrix, computed once: each step
    then reads one row (O(N)) instead of multiplying all N embeddings (O(N D))."""
    dist = _distance_matrix(unit)  # (N, N)
    dist.fill_diagonal_(float("inf"))  # a token is not its own neighbour
    return _max_min(dist.min(dim=1).values, lambda i: dist[i], count)


def _distance_matrix(unit: torch.Tensor) -> torch.Tensor:
    """``1 - unit @ unit.T`` (N, N), computing only the blocks on and above the diagonal
    and mirroring them: ~60% of the full product's FLOPs, and exactly symmetric."""
    n = unit.shape[0]
    dist = torch.empty(n, n, dtype=unit.dtype, device=unit.device)
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        block = torch.mm(unit[lo:hi], unit[lo:].T).neg_().add_(1.0)  # (b, N - lo)
        dist[lo:hi, lo:] = block
        dist[hi:, lo:hi] = block[:, hi - lo:].T
    return dist


def _greedy_chunked(unit: torch.Tensor, count: int) -> torch.Tensor:
    """The same greedy for spans too long for an N x N matrix (long videos): nearest
    neighbours chunk by chunk, then one (N, D) x (D,) product per step."""
    n = unit.shape[0]
    nearest = torch.empty(n, device=unit.device)
    for lo in range(0, n, _CHUNK):
        dist = 1.0 - unit[lo:lo + _CHUNK] @ unit.T  # (chunk, N)
        rows = torch.arange(lo, min(lo + _CHUNK, n), device=unit.device)
        dist[rows - lo, rows] = float("inf")  # a token is not its own neighbour
        nearest[lo:lo + _CHUNK] = dist.min(dim=1).values
    return _max_min(nearest, lambda i: 1.0 - unit @ unit[i], count)


def _max_min(nearest: torch.Tensor, distances, count: int) -> torch.Tensor:
    """The greedy itself: start at the token whose nearest neighbour is farthest
    (``nearest``: (N,)), then repeatedly take the token farthest from the chosen set.
    ``distances(i)`` is token i's (N,) distance row. Returns (count,) in choice order."""
    chosen = torch.empty(count, dtype=torch.long, device=nearest.device)
    chosen[0] = torch.argmax(nearest)
    min_dist = distances(chosen[0]).clone()
    min_dist[chosen[0]] = -float("inf")
    for step in range(1, count):
        nxt = torch.argmax(min_dist)
        chosen[step] = nxt
        torch.minimum(min_dist, distances(nxt), out=min_dist)
        min_dist[nxt] = -float("inf")  # chosen tokens stay at -inf through the minimum
    return chosen
