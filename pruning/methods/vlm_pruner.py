"""VLM-Pruner (Wu et al., arXiv 2512.02700): centrifugal token selection with BSS.

Follows ../shared/spec/vlm-pruner.md exactly. Three stages on one visual span:

1. pivots: the token with the largest key L1 norm, then farthest-point sampling in
   key space (kappa tokens in all);
2. centrifugal selection: rounds of parallel greedy over candidates ordered by the
   Buffering-for-Spatial-Sparsity score
   ``bss_i = (1 + lambda * d_i * nf) * max_{j in Sel} S[i, j]``, accepting a batch's
   members with ``bss < tau`` (tau starts at tau0 and rises 0.1 per round);
3. similarity-weighted aggregation (SWA): each discarded token is fused into its most
   similar retained token, which keeps weight beta.

Speed: the greedy is inherently sequential over batches, but only batches that accept
something change the state. Each step therefore scores *all* remaining candidates of
the round against the current selection in one vectorised pass, jumps straight to the
first batch that accepts anything, and updates the running ``max S`` / ``min dist`` of
every token with the newly accepted columns only. Steps are bounded by the number of
accepting batches (at most R), not the number of batches, and the similarity matrix is
never built: only the N x R columns of selected tokens are ever computed.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import threadpoolctl
import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Param, Selection, register

# Added to tau after every round (spec: "tau += 0.1 each next round").
TAU_STEP = 0.1
# Floor of the assigned weight sum in SWA (spec: max(W_j, 1e-8)).
MIN_WEIGHT_SUM = 1e-8
# Cosine similarity of a zero vector is taken as 0 (normalisation floor).
NORM_EPS = 1e-8

# Spec defaults (paper, LLaVA-1.5-7B ablations); must match select()'s defaults.
PARAMS = {
    "num_pivots": Param(int, 4, "kappa, pivot tokens taken from the keys", low=1),
    "top_channels": Param(int, 256, "q, highest-variance channels used for similarity", low=1),
    "threshold": Param(float, 0.8, "tau0, the first round's BSS threshold", low=0),
    "spatial_lambda": Param(float, 0.5, "lambda, strength of Buffering for Spatial Sparsity", low=0),
    "token_batch": Param(int, 16, "B, candidates accepted in parallel (1 = sequential greedy)", low=1),
    "merge_weight": Param(float, 0.3, "beta, weight a retained token keeps in the SWA fusion",
                          low=0, high=1),
    "temporal_scale": Param(float, 1.0, "length of one frame step in token steps (video)", low=0),
}


@register(
    "vlm_pruner",
    signals=("hidden_states", "key_states", "grid"),
    default_layer=2,
    min_layer=1,
    params=PARAMS,
)
def select(
    hidden_states: torch.Tensor,
    key_states: torch.Tensor,
    grid: tuple[int, int, int],
    num_retain: int,
    *,
    num_pivots: int = 4,
    top_channels: int = 256,
    threshold: float = 0.8,
    spatial_lambda: float = 0.5,
    token_batch: int = 16,
    merge_weight: float = 0.3,
    temporal_scale: float = 1.0,
) -> Selection:
    """Select ``num_retain`` tokens of one visual span and fuse the rest into them.

    Args:
        hidden_states: (N, D) states leaving decoder layer K-1 (``h``).
        key_states: (N, Dk) layer K-1 keys after rotary embedding, heads concatenated (``k``).
        grid: (T, H, W) LLM-side token grid, raster order, T * H * W == N.
        num_retain: R, tokens to keep (``min(R, N)`` are kept).
        num_pivots: kappa, pivot tokens from the keys.
        top_channels: q, highest-variance channels used for cosine similarity.
        threshold: tau0, the first round's BSS threshold.
        spatial_lambda: lambda, strength of the spatial buffering term.
        token_batch: B, candidates accepted in parallel per batch (1 = sequential greedy).
        merge_weight: beta, weight a retained token keeps in the SWA fusion.
        temporal_scale: length of one frame step in token steps (video distance).

    Returns:
        Selection with ``keep`` (R,) ascending and ``hidden_states`` (R, D) after SWA.

    Example (spec defaults, LLaVA-1.5 image): hidden (576, 4096), keys (576, 4096),
    grid (1, 24, 24), num_retain 64 -> keep holds 64 ascending indices in [0, 576).
    """
    n, grid = _check(hidden_states, key_states, grid, num_retain, num_pivots, top_channels,
                     threshold, spatial_lambda, token_batch, merge_weight, temporal_scale)
    num_retain = min(num_retain, n)
    device = hidden_states.device
    if num_retain == n:
        return Selection(torch.arange(n, device=device), hidden_states)

    h = hidden_states.float()  # (N, D)
    pivots = pivot_tokens(key_states.float(), min(num_pivots, num_retain))
    unit = screened_unit_vectors(h, top_channels)  # (N, q')
    pos, nf = token_positions(grid, temporal_scale, device)  # (N, 3), scalar
    order = centrifugal_selection(unit, pos, nf, pivots, num_retain,
                                  threshold, spatial_lambda, token_batch)
    keep, fused = similarity_weighted_aggregation(h, unit, order, merge_weight)
    return Selection(keep, fused.to(hidden_states.dtype))


def pivot_tokens(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Stage 1. (N, Dk) keys -> (count,) pivot indices, in selection order.

    p0 = argmax ||k_i||_1, then farthest-point sampling in Euclidean key space. Tokens
    already chosen are excluded, so duplicate keys still give distinct pivots.
    Squared distances come from ``|a|^2 + |b|^2 - 2 a.b`` (one mat-vec per pivot, as
    ``torch.cdist`` computes them), which only matters for exact near-ties.
    """
    l1 = _row_l1_norms(keys)  # (N,)
    if not torch.isfinite(l1).all():
        raise ValueError("key_states contains NaN or infinite values")
    sq_norm = torch.linalg.vector_norm(keys, dim=1).square_()  # (N,)
    pivots = [torch.argmax(l1)]
    min_dist = torch.full_like(l1, math.inf)
    for _ in range(count - 1):
        last = pivots[-1]
        dist = (sq_norm + sq_norm[last] - 2.0 * (keys @ keys[last])).clamp_min_(0.0)
        min_dist = torch.minimum(min_dist, dist)
        min_dist[torch.stack(pivots)] = -1.0
        pivots.append(torch.argmax(min_dist))
    return torch.stack(pivots)


def screened_unit_vectors(hidden: torch.Tensor, top_channels: int) -> torch.Tensor:
    """(N, D) -> (N, q') unit rows over the q' = min(q, D) highest-variance channels.

    Channels are ranked by unbiased variance over the tokens, ties to the lower channel.
    Cosine similarity S[i, j] is then a plain dot product of two rows.
    """
    variance = _channel_variances(hidden)  # (D,)
    if not torch.isfinite(variance).all():
        raise ValueError("hidden_states contains NaN or infinite values")
    channels = torch.sort(variance, descending=True, stable=True).indices[:top_channels]
    # Ascending channel order does not change any cosine and gathers ~20x faster.
    return F.normalize(hidden.index_select(1, torch.sort(channels).values), dim=1, eps=NORM_EPS)


# Rows per block of the CPU passes below: a (64, 4096) float block is 1 MiB, in L2.
BLOCK_BYTES = 1 << 20


def _row_blocks(matrix: torch.Tensor):
    """(start, stop) row ranges of about BLOCK_BYTES each; one range off the CPU, where a
    whole-matrix kernel is faster than a loop of small ones."""
    n = matrix.shape[0]
    row_bytes = matrix.element_size() * max(1, matrix.shape[1])
    rows = n if matrix.device.type != "cpu" else max(1, BLOCK_BYTES // row_bytes)
    return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def _channel_variances(hidden: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (D,) unbiased variance of each channel over the tokens (two-pass: mean,
    then squared deviations). The deviations are formed block by block in one reused
    buffer: a full (N, D) temporary costs more in fresh pages than in arithmetic on the
    CPU, and torch.var(dim=0) is ~5x slower still."""
    n = hidden.shape[0]
    mean = (hidden.new_ones(n) @ hidden) / n  # (D,), a mat-vec: one fast pass
    total = hidden.new_zeros(hidden.shape[1])
    blocks = _row_blocks(hidden)
    scratch = hidden.new_empty(blocks[0][1] - blocks[0][0], hidden.shape[1])
    for lo, hi in blocks:
        deviation = torch.sub(hidden[lo:hi], mean, out=scratch[:hi - lo])
        total += deviation.square_().sum(dim=0)
    return total / (n - 1)


def _row_l1_norms(keys: torch.Tensor) -> torch.Tensor:
    """(N, Dk) -> (N,) L1 norm of each row, through one reused block buffer (no (N, Dk)
    temporary; torch.linalg.vector_norm(ord=1) is slower still on the CPU)."""
    out = keys.new_empty(keys.shape[0])
    blocks = _row_blocks(keys)
    scratch = keys.new_empty(blocks[0][1] - blocks[0][0], keys.shape[1])
    for lo, hi in blocks:
        torch.sum(torch.abs(keys[lo:hi], out=scratch[:hi - lo]), dim=1, out=out[lo:hi])
    return out


def token_positions(grid: tuple[int, int, int], temporal_scale: float,
                    device: torch.device) -> tuple[torch.Tensor, float]:
    """(T, H, W) -> positions (N, 3) as (t * temporal_scale, y, x), and nf.

    nf = 1 / sqrt(H^2 + W^2) for an image (T = 1) and 1 / sqrt(T^2 + H^2 + W^2) for a
    video, so a single-frame span is exactly the image case.
    Example: grid (1, 2, 3) -> rows (0,0,0) (0,0,1) (0,0,2) (0,1,0) (0,1,1) (0,1,2).
    """
    t, h, w = grid
    idx = torch.arange(t * h * w, device=device)
    pos = torch.stack([(idx // (h * w)) * temporal_scale, (idx // w) % h, idx % w], dim=1)
    extent = h * h + w * w + (t * t if t > 1 else 0)
    return pos.float(), 1.0 / math.sqrt(extent)


class _Numpy:
    """Array operations for the selection loop on the CPU (numpy: ~1 us per call)."""

    @staticmethod
    def transposed(x):
        return np.ascontiguousarray(x.T)

    @staticmethod
    def colmax(x):
        return x.max(axis=0)

    @staticmethod
    def colmin(x):
        return x.min(axis=0)

    maximum, minimum = staticmethod(np.maximum), staticmethod(np.minimum)

    @staticmethod
    def argsort(x):
        return np.argsort(x, kind="stable")

    @staticmethod
    def flatnonzero(mask):
        return np.flatnonzero(mask)

    @staticmethod
    def full(like, n, value, dtype=None):
        return np.full(n, value, dtype=dtype or like.dtype)


class _Torch:
    """The same operations on an accelerator, where the state stays on the device."""

    @staticmethod
    def transposed(x):
        return x.T.contiguous()

    @staticmethod
    def colmax(x):
        return x.amax(dim=0)

    @staticmethod
    def colmin(x):
        return x.amin(dim=0)

    maximum, minimum = staticmethod(torch.maximum), staticmethod(torch.minimum)

    @staticmethod
    def argsort(x):
        return torch.argsort(x, stable=True)

    @staticmethod
    def flatnonzero(mask):
        return mask.nonzero().squeeze(1)

    @staticmethod
    def full(like, n, value, dtype=None):
        return torch.full((n,), value, dtype=dtype or like.dtype, device=like.device)


class _SelectionState:
    """The growing selected set and, for every token, its BSS ingredients against it.

    Works on numpy arrays (CPU) or torch tensors (accelerators) through ``ops``: the
    loop issues many small operations, and numpy's per-call cost is a few times lower
    than torch's on the CPU.
    """

    def __init__(self, unit, pos, nf: float, spatial_lambda: float, capacity: int, ops):
        """unit: (N, q') screened unit rows; pos: (N, 3) token positions."""
        n = unit.shape[0]
        # Column-major copies: updates reduce over a few new tokens along the outer axis.
        self.unit, self.unit_t, self.pos_t = unit, ops.transposed(unit), ops.transposed(pos)
        self.ops = ops
        self.scale = spatial_lambda * nf
        self.max_sim = ops.full(unit, n, -math.inf)  # (N,) max_{j in Sel} S[i, j]
        self.min_dist = ops.full(unit, n, math.inf)  # (N,) min_{j in Sel} dist[i, j]
        self.selected = ops.full(unit, n, False, dtype=bool if ops is _Numpy else torch.bool)
        self.order: list = []
        self.count = 0
        self.capacity = capacity

    def add(self, tokens) -> None:
        """Append ``tokens`` (in this order) to the selection and update every token."""
        ops = self.ops
        sim = self.unit[tokens] @ self.unit_t  # (a, N)
        offset = self.pos_t[:, None, :] - self.pos_t[:, tokens, None]  # (3, a, N)
        nearest = ops.colmin((offset * offset).sum(0)) ** 0.5  # (N,)
        self.max_sim = ops.maximum(self.max_sim, ops.colmax(sim))
        self.min_dist = ops.minimum(self.min_dist, nearest)
        self.selected[tokens] = True
        self.order.append(tokens)
        self.count += len(tokens)

    def bss(self, tokens):
        """BSS score of ``tokens`` against the current selection."""
        return (1.0 + self.scale * self.min_dist[tokens]) * self.max_sim[tokens]

    def ranked_candidates(self):
        """Unselected tokens by ascending BSS, ties by ascending index."""
        candidates = self.ops.flatnonzero(~self.selected)
        return candidates[self.ops.argsort(self.bss(candidates))]


@functools.cache
def _blas_controller() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def _one_blas_thread():
    """Context: numpy's BLAS on one thread. The rounds' products are small ((a, q') x
    (q', N)); with a BLAS thread per core they wait on each other whenever the machine
    is busy (a model running beside, other actors): 3.7 ms instead of 0.16 ms per
    product measured on 2 loaded cores, 20x slower rounds."""
    return _blas_controller().limit(limits=1, user_api="blas")


def centrifugal_selection(unit: torch.Tensor, pos: torch.Tensor, nf: float, pivots: torch.Tensor,
                          num_retain: int, threshold: float, spatial_lambda: float,
                          token_batch: int) -> torch.Tensor:
    """Stage 2. Returns the R selected indices (R,) in the order they were selected."""
    on_cpu = unit.device.type == "cpu"
    ops = _Numpy if on_cpu else _Torch
    arrays = [x.numpy() if on_cpu else x for x in (unit, pos, pivots)]
    state = _SelectionState(arrays[0], arrays[1], nf, spatial_lambda, num_retain, ops)
    with _one_blas_thread() if on_cpu else contextlib.nullcontext():
        state.add(arrays[2])
        tau = threshold
        while state.count < num_retain:
            _run_round(state, state.ranked_candidates(), tau, token_batch)
            tau += TAU_STEP
    order = [torch.from_numpy(x) if on_cpu else x for x in state.order]
    return torch.cat(order).to(unit.device)


def _run_round(state: _SelectionState, ranked, tau: float, token_batch: int) -> None:
    """Walk ``ranked`` in batches of B, jumping over batches that accept nothing.

    A batch that accepts nothing leaves the selection unchanged, so scoring all
    remaining candidates against the current selection at once tells which batch is
    the next to accept, and what it accepts, exactly as a batch-by-batch walk would.
    """
    start = 0
    while start < len(ranked) and state.count < state.capacity:
        rest = ranked[start:]
        scores = state.bss(rest)
        hits = state.ops.flatnonzero(scores < tau)
        if len(hits) == 0:
            return
        batch_index = int(hits[0]) // token_batch
        if start == 0 and batch_index > 0:
            return  # the round's first batch accepted nothing: the round ends at once
        lo, hi = batch_index * token_batch, (batch_index + 1) * token_batch
        members, member_scores = rest[lo:hi], scores[lo:hi]
        take = state.ops.flatnonzero(member_scores < tau)  # batch positions, ascending
        room = state.capacity - state.count
        if len(take) > room:
            lowest = state.ops.argsort(member_scores)[:room]
            take = lowest[state.ops.argsort(lowest)]  # back to batch order
        state.add(members[take])
        start += hi


def similarity_weighted_aggregation(hidden: torch.Tensor, unit: torch.Tensor, order: torch.Tensor,
                                    merge_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3. Fuse each discarded token into its most similar retained token.

    Args:
        hidden: (N, D) float states; unit: (N, q') screened unit rows;
        order: (R,) retained indices in selection order (earlier wins a similarity tie).
    Returns:
        keep (R,) ascending and the fused states (R, D) in ``keep`` order.
    """
    n = hidden.shape[0]
    discarded = torch.ones(n, dtype=torch.bool, device=hidden.device)
    discarded[order] = False
    discarded = discarded.nonzero().squeeze(1)  # (N - R,)
    sim = unit[discarded] @ unit[order].T  # (N - R, R)
    weight, target = sim.max(dim=1)  # first maximum: the earliest selected token
    weight_sum = torch.zeros(order.numel(), device=hidden.device).index_add_(0, target, weight)
    share = weight / weight_sum.clamp_min(MIN_WEIGHT_SUM)[target]  # w_ij / max(W_j, 1e-8)
    # agg_j = sum_i share_i h_i as a sparse (R, N) x (N, D) product: no (N - R, D) copies.
    mixing = torch.sparse_coo_tensor(torch.stack([target, discarded]), share, (order.numel(), n),
                                     check_invariants=False)
    agg = torch.sparse.mm(mixing, hidden)  # (R, D)
    # h_j <- beta h_j + (1 - beta) agg_j where W_j > 0; unchanged elsewhere.
    mix = ((weight_sum > 0) * (1.0 - merge_weight))[:, None]  # (R, 1)
    fused = torch.lerp(hidden[order], agg, mix)
    keep, rank = torch.sort(order)
    return keep, fused[rank]


def _check(hidden_states, key_states, grid, num_retain, num_pivots, top_channels, threshold,
           spatial_lambda, token_batch, merge_weight, temporal_scale) -> tuple[int, tuple]:
    # NaN/inf are caught on the reductions of stages 1 and 2, not by a full scan here.
    checks.matrix("hidden_states", hidden_states, check_finite=False)
    n = hidden_states.shape[0]
    checks.matrix("key_states", key_states, rows=n, check_finite=False)
    checks.same_device("key_states", key_states, hidden_states.device)
    grid = checks.grid("grid", grid, n)
    checks.positive_int("num_retain", num_retain)
    checks.positive_int("num_pivots", num_pivots)
    checks.positive_int("top_channels", top_channels)
    checks.positive_int("token_batch", token_batch)
    checks.non_negative("threshold", threshold)
    checks.non_negative("spatial_lambda", spatial_lambda)
    checks.non_negative("temporal_scale", temporal_scale)
    checks.in_range("merge_weight", merge_weight, 0.0, 1.0)
    return n, grid
