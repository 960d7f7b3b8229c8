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

Two implementations with the same results. On the CPU, ``vlm_pruner_cpu`` runs the
stages as compiled loops (numba): a selection is then a few memory-bound passes over
the inputs. Elsewhere (CUDA) the torch path keeps everything on the device
(``select_torch`` forces it on any device, for tests and benchmarks). Its greedy is
inherently sequential over batches, but only batches that accept something change the
state: each round scores all remaining candidates against the current selection in one
vectorised pass, jumps to the first batch that accepts anything, and resolves the window
of ~1024 candidates starting there in one step (on CUDA one Triton kernel program,
``vlm_pruner_triton``, walks the window's batches with their scores in registers;
elsewhere a torch loop), then updates the running ``max S`` / ``min dist`` of every token
with the accepted columns only. At N = 16384 that is ~30 windows instead of ~600
host-synchronised batch steps, and the N x N similarity matrix is never built.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from pruning.methods import checks, vlm_pruner_cpu, vlm_pruner_triton
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
    "adaptive_lambda": Param(float, 0.0, "0 = the fixed spatial_lambda; > 0: lambda = adaptive_lambda x the "
                             "span's redundancy (mean screened cosine similarity, floored at 0)", low=0),
}


@functools.cache
def warm_up(device: str = "cpu") -> None:
    """Run ``select`` once per process and device on a tiny span, so that its kernels are
    ready before the first timed selection: on the CPU the numba kernels are compiled
    (first run in an environment, ~16 s) or loaded from numba's disk cache (~0.5 s); on
    CUDA the Triton window kernel for the default token_batch is compiled or loaded from
    Triton's cache (other batch sizes compile on their first use)."""
    g = torch.Generator().manual_seed(0)
    select(torch.randn(16, 8, generator=g).to(device), torch.randn(16, 4, generator=g).to(device),
           (1, 4, 4), 4)


@register(
    "vlm_pruner",
    signals=("hidden_states", "key_states", "grid", "token_index"),
    default_layer=2,
    min_layer=0,
    params=PARAMS,
    warm_up=warm_up,
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
    adaptive_lambda: float = 0.0,
    token_index: torch.Tensor | None = None,
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
        adaptive_lambda: 0 keeps ``spatial_lambda``; > 0 replaces it with
            ``adaptive_lambda * max(0, rho)``, rho the span's mean pairwise cosine similarity
            on the screened channels (an open question of the paper; our rule: redundant
            spans get more spatial buffering, so their budget spreads wider).
        token_index: (N,) the tokens' raster indices in ``grid`` (default arange(N), then
            T * H * W == N); later stages of progressive pruning pass the survivors'.

    Returns:
        Selection with ``keep`` (R,) ascending and ``hidden_states`` (R, D) after SWA.

    Example (spec defaults, LLaVA-1.5 image): hidden (576, 4096), keys (576, 4096),
    grid (1, 24, 24), num_retain 64 -> keep holds 64 ascending indices in [0, 576).
    """
    return _checked(hidden_states, key_states, grid, num_retain, num_pivots, top_channels,
                    threshold, spatial_lambda, token_batch, merge_weight, temporal_scale,
                    adaptive_lambda, token_index)


def select_torch(hidden_states: torch.Tensor, key_states: torch.Tensor, grid: tuple[int, int, int],
                 num_retain: int, *, num_pivots: int = 4, top_channels: int = 256,
                 threshold: float = 0.8, spatial_lambda: float = 0.5, token_batch: int = 16,
                 merge_weight: float = 0.3, temporal_scale: float = 1.0, adaptive_lambda: float = 0.0,
                 token_index: torch.Tensor | None = None) -> Selection:
    """``select`` on the torch path whatever the device: what CUDA runs, here for tests
    and benchmarks on the CPU."""
    return _checked(hidden_states, key_states, grid, num_retain, num_pivots, top_channels,
                    threshold, spatial_lambda, token_batch, merge_weight, temporal_scale,
                    adaptive_lambda, token_index, torch_only=True)


def _checked(hidden_states, key_states, grid, num_retain, num_pivots, top_channels, threshold,
             spatial_lambda, token_batch, merge_weight, temporal_scale, adaptive_lambda, token_index,
             torch_only=False) -> Selection:
    """Check the arguments, keep everything when R >= N, else run the CPU or torch path."""
    n, grid = _check(hidden_states, key_states, grid, num_retain, num_pivots, top_channels, threshold,
                     spatial_lambda, token_batch, merge_weight, temporal_scale, token_index)
    checks.non_negative("adaptive_lambda", adaptive_lambda)
    if num_retain >= n:
        return Selection(torch.arange(n, device=hidden_states.device), hidden_states)
    pos, nf = token_positions(grid, temporal_scale)  # (T*H*W, 3), scalar
    if token_index is not None:
        pos = pos[token_index.cpu().numpy()]  # (N, 3) the survivors' cells
    on_cpu = hidden_states.device.type == "cpu" and not torch_only
    implementation = _select_cpu if on_cpu else _select_torch
    return implementation(hidden_states, key_states, pos, nf, num_retain, num_pivots, top_channels, threshold,
                          spatial_lambda, adaptive_lambda, token_batch, merge_weight)


def span_redundancy(unit: torch.Tensor) -> float:
    """Mean cosine similarity over the span's distinct token pairs, from (N, q') unit rows:
    ``(|sum_i u_i|^2 - sum_i |u_i|^2) / (N (N - 1))``, O(N q') without the N x N matrix."""
    n = unit.shape[0]
    total = unit.sum(dim=0)
    return float((total @ total - unit.square().sum()) / max(n * (n - 1), 1))


def _lambda(spatial_lambda: float, adaptive_lambda: float, unit) -> float:
    """The span's lambda: fixed, or adaptive_lambda x its redundancy (floored at 0)."""
    if adaptive_lambda == 0:
        return spatial_lambda
    return adaptive_lambda * max(0.0, span_redundancy(torch.as_tensor(unit)))


def _select_cpu(hidden_states, key_states, pos, nf, num_retain, num_pivots, top_channels, threshold,
                spatial_lambda, adaptive_lambda, token_batch, merge_weight) -> Selection:
    """The compiled CPU path (``vlm_pruner_cpu``)."""
    h = hidden_states.detach().float().contiguous().numpy()  # (N, D), no copy for float32
    k = key_states.detach().float().contiguous().numpy()  # (N, Dk)
    pivots = vlm_pruner_cpu.pivot_tokens(k, min(num_pivots, num_retain))
    unit = vlm_pruner_cpu.screened_unit_vectors(h, top_channels)  # (N, q')
    spatial_lambda = _lambda(spatial_lambda, adaptive_lambda, unit)
    order, sim_cols = vlm_pruner_cpu.centrifugal_selection(
        unit, pos, nf, pivots, num_retain, threshold, spatial_lambda, token_batch, TAU_STEP)
    keep, fused = vlm_pruner_cpu.similarity_weighted_aggregation(h, order, sim_cols, merge_weight,
                                                                 MIN_WEIGHT_SUM)
    return Selection(torch.from_numpy(keep), torch.from_numpy(fused).to(hidden_states.dtype))


def _select_torch(hidden_states, key_states, pos, nf, num_retain, num_pivots, top_channels, threshold,
                  spatial_lambda, adaptive_lambda, token_batch, merge_weight) -> Selection:
    """The torch path: every step stays on the tensors' device."""
    h = hidden_states.float()  # (N, D)
    pivots = pivot_tokens(key_states.float(), min(num_pivots, num_retain))
    unit = screened_unit_vectors(h, top_channels)  # (N, q')
    spatial_lambda = _lambda(spatial_lambda, adaptive_lambda, unit)
    pos = torch.tensor(pos, device=h.device)
    order = centrifugal_selection(unit, pos, nf, pivots, num_retain,
                                  threshold, spatial_lambda, token_batch)
    keep, fused = similarity_weighted_aggregation(h, unit, order, merge_weight)
    return Selection(keep, fused.to(hidden_states.dtype))


def pivot_tokens(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Stage 1. (N, Dk) keys -> (count,) pivot indices, in selection order.

    p0 = argmax ||k_i||_1, then farthest-point sampling in Euclidean key space (on
    squared distances: same argmax). Tokens already chosen are excluded, so duplicate
    keys still give distinct pivots.
    """
    l1 = keys.abs().sum(dim=1)  # (N,)
    if not torch.isfinite(l1).all():
        raise ValueError("key_states contains NaN or infinite values")
    pivots = [torch.argmax(l1)]
    min_dist = torch.full_like(l1, math.inf)
    for _ in range(count - 1):
        dist = (keys - keys[pivots[-1]]).square_().sum(dim=1)  # (N,)
        min_dist = torch.minimum(min_dist, dist)
        min_dist[torch.stack(pivots)] = -1.0
        pivots.append(torch.argmax(min_dist))
    return torch.stack(pivots)


def screened_unit_vectors(hidden: torch.Tensor, top_channels: int) -> torch.Tensor:
    """(N, D) -> (N, q') unit rows over the q' = min(q, D) highest-variance channels.

    Channels are ranked by unbiased variance over the tokens, ties to the lower channel.
    Cosine similarity S[i, j] is then a plain dot product of two rows.
    """
    variance = hidden.var(dim=0)  # (D,), unbiased
    if not torch.isfinite(variance).all():
        raise ValueError("hidden_states contains NaN or infinite values")
    channels = torch.sort(variance, descending=True, stable=True).indices[:top_channels]
    # Ascending channel order does not change any cosine and gathers ~20x faster.
    return F.normalize(hidden.index_select(1, torch.sort(channels).values), dim=1, eps=NORM_EPS)


@functools.lru_cache(maxsize=64)
def token_positions(grid: tuple[int, int, int],
                    temporal_scale: float) -> tuple[np.ndarray, float]:
    """(T, H, W) -> float32 positions (N, 3) as (t * temporal_scale, y, x), and nf.

    nf = 1 / sqrt(H^2 + W^2) for an image (T = 1) and 1 / sqrt(T^2 + H^2 + W^2) for a
    video, so a single-frame span is exactly the image case. Cached (a model sees few
    grids) and read-only; built with numpy for both paths.
    Example: grid (1, 2, 3) -> rows (0,0,0) (0,0,1) (0,0,2) (0,1,0) (0,1,1) (0,1,2).
    """
    t, h, w = grid
    idx = np.arange(t * h * w)
    pos = np.stack([(idx // (h * w)) * temporal_scale, (idx // w) % h, idx % w], axis=1)
    pos = pos.astype(np.float32)
    pos.flags.writeable = False
    extent = h * h + w * w + (t * t if t > 1 else 0)
    return pos, 1.0 / math.sqrt(extent)


class _SelectionState:
    """The growing selected set and, for every token, its BSS ingredients against it."""

    def __init__(self, unit: torch.Tensor, pos: torch.Tensor, nf: float, spatial_lambda: float,
                 capacity: int):
        """unit: (N, q') screened unit rows; pos: (N, 3) token positions."""
        n = unit.shape[0]
        # Column-major copies: updates reduce over a few new tokens along the outer axis.
        self.unit, self.unit_t = unit, unit.T.contiguous()
        self.pos, self.pos_t = pos, pos.T.contiguous()
        self.scale = spatial_lambda * nf
        self.max_sim = unit.new_full((n,), -math.inf)  # (N,) max_{j in Sel} S[i, j]
        self.min_dist = unit.new_full((n,), math.inf)  # (N,) min_{j in Sel} dist[i, j]
        self.selected = torch.zeros(n, dtype=torch.bool, device=unit.device)
        self.order: list[torch.Tensor] = []
        self.count = 0
        self.capacity = capacity

    def add(self, tokens: torch.Tensor) -> None:
        """Append ``tokens`` (in this order) to the selection and update every token."""
        for chunk in tokens.split(_ADD_CHUNK):  # bounds the (3, a, N) offsets
            sim = self.unit[chunk] @ self.unit_t  # (a, N)
            self.max_sim = torch.maximum(self.max_sim, sim.amax(dim=0))
            self.min_dist = torch.minimum(self.min_dist, _nearest_distance(self.pos_t, chunk))
        self.selected[tokens] = True
        self.order.append(tokens)
        self.count += len(tokens)

    def bss(self, tokens: torch.Tensor) -> torch.Tensor:
        """float32 BSS scores of ``tokens`` against the current selection."""
        return (1.0 + self.scale * self.min_dist[tokens]) * self.max_sim[tokens]

    def ranked_candidates(self) -> torch.Tensor:
        """Unselected tokens by ascending BSS, ties by ascending index."""
        candidates = (~self.selected).nonzero().squeeze(1)
        return candidates[torch.argsort(self.bss(candidates), stable=True)]

    def resolve(self, window: torch.Tensor, threshold: float, token_batch: int) -> torch.Tensor:
        """Walk the batches of ``window`` (ranked candidates from a batch boundary on) and
        return the accepted tokens in batch order; the state itself is not updated."""
        unit = self.unit[window]  # (L, q')
        args = (unit @ unit.T, self.pos[window], self.max_sim[window], self.min_dist[window],
                self.capacity - self.count, threshold, self.scale, token_batch)
        if vlm_pruner_triton.usable(window.device, token_batch):
            return window[vlm_pruner_triton.resolve_window(*args)]
        return window[_resolve_window_torch(*args)]


# Accepted tokens applied to the state at a time by _SelectionState.add.
_ADD_CHUNK = 128


def centrifugal_selection(unit: torch.Tensor, pos: torch.Tensor, nf: float, pivots: torch.Tensor,
                          num_retain: int, threshold: float, spatial_lambda: float,
                          token_batch: int) -> torch.Tensor:
    """Stage 2. Returns the R selected indices (R,) in the order they were selected."""
    state = _SelectionState(unit, pos, nf, spatial_lambda, num_retain)
    state.add(pivots)
    tau = threshold
    while state.count < num_retain:
        _run_round(state, state.ranked_candidates(), tau, token_batch)
        tau += TAU_STEP
    return torch.cat(state.order)


def _run_round(state: _SelectionState, ranked, tau: float, token_batch: int) -> None:
    """Walk ``ranked`` in batches of B, a window of whole batches at a time.

    A batch that accepts nothing leaves the selection unchanged, so scoring all
    remaining candidates against the current selection at once tells which batch is
    the next to accept; the walk jumps there and resolves the window of batches that
    starts with it (``_SelectionState.resolve``: on CUDA one kernel, without a host
    sync per batch), exactly as a batch-by-batch walk would.
    """
    threshold = float32_threshold(tau)
    window = vlm_pruner_triton.window_length(token_batch)
    start = 0
    while start < len(ranked) and state.count < state.capacity:
        hit = state.bss(ranked[start:]) < threshold
        first = torch.argmax(hit.to(torch.uint8))  # the first hit, or 0 if there is none
        first, found = torch.stack([first, hit[first].long()]).tolist()  # one host sync
        if not found:
            return
        skipped = first // token_batch * token_batch
        if start == 0 and skipped > 0:
            return  # the round's first batch accepted nothing: the round ends at once
        start += skipped
        candidates = ranked[start:start + window]
        state.add(state.resolve(candidates, threshold, token_batch))
        start += len(candidates)


def _resolve_window_torch(sim: torch.Tensor, pos: torch.Tensor, max_sim: torch.Tensor,
                          min_dist: torch.Tensor, room: int, threshold: float, scale: float,
                          token_batch: int) -> torch.Tensor:
    """Walk one window's batches with torch ops (the kernel's contract, any device).

    Args:
        sim: (L, L) similarities of the window's candidates, in ranked order.
        pos: (L, 3) positions; max_sim, min_dist: (L,) against the selection at the
            window's start (updated here as members are accepted).
        room: tokens still to select; threshold: accept bss < threshold (float32 bound).
        scale: lambda * nf; token_batch: B (the window starts at a batch boundary).
    Returns:
        (L,) bool, True for the accepted candidates.
    """
    length = sim.shape[0]
    accept = torch.zeros(length, dtype=torch.bool, device=sim.device)
    start = 0
    while start < length and room > 0:
        scores = (1.0 + scale * min_dist[start:]) * max_sim[start:]
        hits = (scores < threshold).nonzero().squeeze(1)
        if len(hits) == 0:
            break
        skipped = int(hits[0]) // token_batch * token_batch
        lo, hi = start + skipped, min(start + skipped + token_batch, length)
        member_scores = scores[skipped:skipped + token_batch]
        take = (member_scores < threshold).nonzero().squeeze(1)  # batch positions, ascending
        if len(take) > room:
            lowest = torch.argsort(member_scores, stable=True)[:room]
            take = torch.sort(lowest).values  # back to batch order
        members = lo + take
        accept[members] = True
        max_sim = torch.maximum(max_sim, sim[members].amax(dim=0))
        min_dist = torch.minimum(min_dist, _nearest_distance(pos.T, members))
        room -= len(take)
        start = hi
    return accept


def _nearest_distance(pos_t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(3, M) positions, (a,) indices into them -> (M,) grid distance from each position
    to the nearest of ``tokens``. Squares are summed (t, y) then x, in float32, as the
    Triton kernel sums them, so both resolvers and the state see the same distances."""
    offset = pos_t[:, None, :] - pos_t[:, tokens, None]  # (3, a, M)
    square = offset * offset
    return ((square[0] + square[1]) + square[2]).amin(dim=0).sqrt()


def float32_threshold(tau: float) -> float:
    """The smallest float32 >= tau: for a float32 score x, ``x < tau`` exactly when
    ``x < float32_threshold(tau)``, so scores compare with tau's exact value in float32."""
    bound = np.float32(tau)
    if float(bound) < tau:
        bound = np.nextafter(bound, np.float32(np.inf))
    return float(bound)


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
           spatial_lambda, token_batch, merge_weight, temporal_scale, token_index) -> tuple[int, tuple]:
    # NaN/inf are caught on the reductions of stages 1 and 2, not by a full scan here.
    checks.matrix("hidden_states", hidden_states, check_finite=False)
    n = hidden_states.shape[0]
    checks.matrix("key_states", key_states, rows=n, check_finite=False)
    checks.same_device("key_states", key_states, hidden_states.device)
    if token_index is None:
        grid = checks.grid("grid", grid, n)
    else:
        grid = checks.grid_shape("grid", grid)
        if not isinstance(token_index, torch.Tensor) or token_index.shape != (n,) or \
                token_index.dtype != torch.long:
            raise ValueError(f"token_index must be an int64 tensor of shape ({n},), got {token_index!r}")
        if n and not (0 <= int(token_index.min()) and int(token_index.max()) < math.prod(grid)):
            raise ValueError(f"token_index entries must be cells of grid {grid} (in [0, {math.prod(grid)}))")
    checks.positive_int("num_retain", num_retain)
    checks.positive_int("num_pivots", num_pivots)
    checks.positive_int("top_channels", top_channels)
    checks.positive_int("token_batch", token_batch)
    checks.non_negative("threshold", threshold)
    checks.non_negative("spatial_lambda", spatial_lambda)
    checks.non_negative("temporal_scale", temporal_scale)
    checks.in_range("merge_weight", merge_weight, 0.0, 1.0)
    return n, grid
