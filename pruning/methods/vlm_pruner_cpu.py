"""VLM-Pruner's CPU path: the spec's three stages as compiled loops (numba).

On the CPU a selection at N = 576, D = 4096 is a few passes over ~10 MB of inputs and
a greedy walk over at most N candidates. Written as torch or numpy calls, every step
pays microseconds of dispatch and most passes a fresh (N, D) temporary (page faults
cost more than the arithmetic); compiled, each pass reads the inputs once and writes
nothing of their size, and the greedy walks the spec's batches literally. The
similarity columns of the selected tokens, computed once as tokens join the
selection, serve both the BSS updates and the fusion.

Same results as ``vlm_pruner``'s torch path (used on accelerators); both are tested
against ``tests/reference/vlm_pruner_loop.py``. Arrays are numpy, float32, C-ordered.
The kernels compile on first use (a few seconds) and are cached on disk by numba.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

# Reassociation lets sums and dot products vectorise; no-NaN / no-inf flags are left out
# so that the finiteness checks below stay meaningful.
_jit = functools.partial(numba.njit, cache=True, nogil=True,
                         fastmath={"reassoc", "contract", "nsz", "arcp"})


@_jit
def _stable_argsort(keys):
    """Indices that sort ``keys`` ascending, equal keys in index order (a bottom-up merge
    sort; numba's own ``kind="mergesort"`` takes it several seconds longer to compile)."""
    n = keys.shape[0]
    index, other = np.arange(n), np.empty(n, np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j = lo, mid
            for k in range(lo, hi):
                if i < mid and (j >= hi or keys[index[i]] <= keys[index[j]]):
                    other[k] = index[i]
                    i += 1
                else:
                    other[k] = index[j]
                    j += 1
        index, other = other, index
        width *= 2
    return index


@_jit
def _descending_from_last(values):
    """Indices by descending value, equal values from the highest index down."""
    n = values.shape[0]
    flipped = np.empty(n, values.dtype)
    for i in range(n):
        flipped[i] = -values[n - 1 - i]
    order = _stable_argsort(flipped)
    for i in range(n):
        order[i] = n - 1 - order[i]
    return order


@_jit
def _squared_distance(keys, i, j):
    """||k_i - k_j||^2. Every distance of stage 1 goes through this one loop, so equal
    inputs give bit-equal distances wherever they are measured."""
    dist = np.float32(0.0)
    for c in range(keys.shape[1]):
        diff = keys[i, c] - keys[j, c]
        dist += diff * diff
    return dist


@_jit
def pivot_tokens(keys, count):
    """Stage 1. keys (N, Dk) -> (count,) int64 pivots in selection order.

    p0 = argmax ||k_i||_1, then farthest-point sampling on squared Euclidean distances
    (same argmax). Ties go to the lowest index; chosen tokens are excluded, so duplicate
    keys still give distinct pivots.

    Lazy, and still exact: a token's distance to the nearest pivot can only shrink as
    pivots are added, so its last known value bounds it from above (infinity before any
    is measured). Each step visits tokens by descending bound, brings each up to date
    with the pivots it has not been measured against, and stops at the first bound below
    the best exact value found. Later steps thus measure a fraction of the tokens, each
    sparing part of a pass over the (N, Dk) keys (memory-bound on the CPU).
    """
    n, dk = keys.shape
    pivots = np.empty(count, np.int64)
    best, first = np.float32(-1.0), 0
    for i in range(n):
        l1 = np.float32(0.0)
        for c in range(dk):
            l1 += abs(keys[i, c])
        if not np.isfinite(l1):
            raise ValueError("key_states contains NaN or infinite values")
        if l1 > best:
            best, first = l1, i
    pivots[0] = first
    taken = np.zeros(n, np.bool_)
    taken[first] = True
    bound = np.full(n, np.inf, np.float32)  # >= min distance to the pivots so far
    measured = np.zeros(n, np.int64)  # pivots[:measured[i]] have been measured for token i
    for j in range(1, count):
        best, arg = np.float32(-1.0), n
        # Descending bound; equal bounds (all infinite in the first step) from the last
        # token back, so the first step starts with the rows the L1 pass read last,
        # still in cache. The visiting order among equal bounds changes no result.
        for i in _descending_from_last(bound):
            if taken[i]:
                continue
            if bound[i] < best:
                break
            while measured[i] < j:
                bound[i] = min(bound[i], _squared_distance(keys, i, pivots[measured[i]]))
                measured[i] += 1
            if bound[i] > best or (bound[i] == best and i < arg):
                best, arg = bound[i], i
        pivots[j] = arg
        taken[arg] = True
    return pivots


# Rows per block of the variance pass: 32 rows of 4096 float32 (512 KiB) stay in L2 for
# the block's second look, so the (N, D) states are read from memory once.
_BLOCK_ROWS = 32


@_jit
def channel_variances(hidden):
    """(N, D) -> (D,) float64 unbiased variance of each channel over the tokens.

    One pass from memory: each block of rows is summed, then its deviations from its own
    (float32) mean are summed and squared while the block is still in cache, and blocks
    are merged in float64 (Chan et al.'s pairwise update). Within ~1e-7 of a float64
    two-pass computation even when channels carry large offsets. Rows are taken four at
    a time so that the per-channel accumulators are loaded and stored once per four rows.
    """
    n, d = hidden.shape
    mean = np.zeros(d, np.float64)
    m2 = np.zeros(d, np.float64)
    center = np.empty(d, np.float32)
    first = np.empty(d, np.float32)
    second = np.empty(d, np.float32)
    seen = 0
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(lo + _BLOCK_ROWS, n)
        rows = hi - lo
        quads = lo + (rows - rows % 4)  # rows [lo, quads) go four at a time
        center[:] = 0.0
        for i in range(lo, quads, 4):
            a, b, e, g = hidden[i], hidden[i + 1], hidden[i + 2], hidden[i + 3]
            for c in range(d):
                center[c] += (a[c] + b[c]) + (e[c] + g[c])
        for i in range(quads, hi):
            center += hidden[i]
        center *= np.float32(1.0 / rows)
        first[:] = 0.0
        second[:] = 0.0
        for i in range(lo, quads, 4):
            a, b, e, g = hidden[i], hidden[i + 1], hidden[i + 2], hidden[i + 3]
            for c in range(d):
                m = center[c]
                x0, x1, x2, x3 = a[c] - m, b[c] - m, e[c] - m, g[c] - m
                first[c] += (x0 + x1) + (x2 + x3)
                second[c] += (x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3)
        for i in range(quads, hi):
            a = hidden[i]
            for c in range(d):
                x0 = a[c] - center[c]
                first[c] += x0
                second[c] += x0 * x0
        total = seen + rows
        weight, cross = rows / total, seen * rows / total
        for c in range(d):
            f = np.float64(first[c])
            delta = center[c] + f / rows - mean[c]  # block mean - running mean
            mean[c] += delta * weight
            m2[c] += (second[c] - f * f / rows) + delta * delta * cross
        seen = total
    return m2 / max(n - 1, 1)


@_jit
def _kth_largest(values, k):
    """The k-th largest (k >= 1) of ``values`` (not modified): quickselect on a copy
    (numpy's partition works too but takes numba ~10 s to compile)."""
    work = values.copy()
    lo, hi, target = 0, work.shape[0] - 1, k - 1  # position of the answer, descending
    while lo < hi:
        pivot = work[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:  # Hoare partition, descending: >= pivot left, <= pivot right
            while work[i] > pivot:
                i += 1
            while work[j] < pivot:
                j -= 1
            if i <= j:
                work[i], work[j] = work[j], work[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return work[target]


@_jit
def _top_channels(variance, count):
    """Indices of the ``count`` largest variances, ties to the lower channel, ascending
    (one selection instead of a sort; ascending order does not change any cosine)."""
    d = variance.shape[0]
    if count >= d:
        return np.arange(d)
    cut = _kth_largest(variance, count)
    ties = count  # how many channels equal to cut are taken: count minus those above
    for c in range(d):
        if variance[c] > cut:
            ties -= 1
    channels = np.empty(count, np.int64)
    k = 0
    for c in range(d):
        if variance[c] > cut or (variance[c] == cut and ties > 0):
            if variance[c] == cut:
                ties -= 1
            channels[k] = c
            k += 1
    return channels


@_jit
def screened_unit_vectors(hidden, top_channels):
    """hidden (N, D) -> (N, q') unit rows over the q' = min(q, D) highest-variance channels.

    Channels ranked by descending variance, ties to the lower channel; rows normalised as
    x / max(|x|, 1e-8). S[i, j] is then a plain dot product of two rows.
    """
    n, d = hidden.shape
    variance = channel_variances(hidden)
    for c in range(d):
        if not np.isfinite(variance[c]):
            raise ValueError("hidden_states contains NaN or infinite values")
    channels = _top_channels(variance, top_channels)
    q = channels.shape[0]
    unit = np.empty((n, q), np.float32)
    for i in range(n):
        norm = np.float32(0.0)
        for m in range(q):
            x = hidden[i, channels[m]]
            unit[i, m] = x
            norm += x * x
        norm = max(np.sqrt(norm), np.float32(1e-8))
        for m in range(q):
            unit[i, m] = unit[i, m] / norm
    return unit


@_jit
def _fold(token, row, pos, max_sim, min_sq_dist):
    """Fold S[:, token] (``row``) and the squared grid distances to ``token`` into every
    token's running max similarity / min squared distance (branch-free, so it
    vectorises; values of selected tokens are never read again)."""
    for i in range(row.shape[0]):
        max_sim[i] = max(max_sim[i], row[i])
        dt = pos[i, 0] - pos[token, 0]
        dy = pos[i, 1] - pos[token, 1]
        dx = pos[i, 2] - pos[token, 2]
        min_sq_dist[i] = min(min_sq_dist[i], dt * dt + dy * dy + dx * dx)


# Rows of the unit matrix per block of _add_tokens: 128 x 256 floats (128 KiB) stay in L2
# while every group of four new tokens is scored against them.
_SIMILARITY_BLOCK_ROWS = 128


@_jit
def _similarity_rows(unit, tokens, rows, lo, hi):
    """rows[k, i] = S[i, tokens[k]] for the four ``tokens`` and i in [lo, hi), lo even.

    Two rows by four tokens at a time: eight running sums share every load. Every dot
    product runs through this one loop (a short group repeats a token, an odd last row
    repeats itself), so it rounds the same wherever its token and row fall.
    """
    n, q = unit.shape
    u0, u1, u2, u3 = unit[tokens[0]], unit[tokens[1]], unit[tokens[2]], unit[tokens[3]]
    for i in range(lo, hi, 2):
        x, y = unit[i], unit[min(i + 1, n - 1)]
        a0, a1, a2, a3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
        b0, b1, b2, b3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
        for m in range(q):
            xm, ym = x[m], y[m]
            a0 += xm * u0[m]
            a1 += xm * u1[m]
            a2 += xm * u2[m]
            a3 += xm * u3[m]
            b0 += ym * u0[m]
            b1 += ym * u1[m]
            b2 += ym * u2[m]
            b3 += ym * u3[m]
        rows[0, i], rows[1, i], rows[2, i], rows[3, i] = a0, a1, a2, a3
        if i + 1 < n:
            rows[0, i + 1], rows[1, i + 1], rows[2, i + 1], rows[3, i + 1] = b0, b1, b2, b3


@_jit
def _add_tokens(lo, hi, order, unit, pos, selected, sim_cols, max_sim, min_sq_dist):
    """Add order[lo:hi] to the selection: record S[i, order[j]] in sim_cols[j, i] and
    fold it into the running max / min. Rows go in blocks that stay in cache while each
    group of four tokens is scored against them. (Plain loops: a BLAS call per accepted
    batch, mostly 1-8 tokens, costs more in packing the (q', N) operand than it saves.)"""
    n = unit.shape[0]
    for j in range(lo, hi):
        selected[order[j]] = True
    groups = (hi - lo + 3) // 4
    tokens = np.empty((groups, 4), np.int64)
    for g in range(groups):
        for k in range(4):
            tokens[g, k] = order[min(lo + 4 * g + k, hi - 1)]
    spare = np.empty((4, n), np.float32)  # the last group's rows when it is short
    for start in range(0, n, _SIMILARITY_BLOCK_ROWS):
        stop = min(start + _SIMILARITY_BLOCK_ROWS, n)
        for g in range(groups):
            first = lo + 4 * g
            rows = sim_cols[first:first + 4] if first + 4 <= hi else spare
            _similarity_rows(unit, tokens[g], rows, start, stop)
    if (hi - lo) % 4:
        first = lo + 4 * (groups - 1)
        for k in range(hi - first):
            sim_cols[first + k] = spare[k]
    for j in range(lo, hi):
        _fold(order[j], sim_cols[j], pos, max_sim, min_sq_dist)


@_jit
def centrifugal_selection(unit, pos, nf, pivots, num_retain, threshold, spatial_lambda,
                          token_batch, tau_step):
    """Stage 2, one batch at a time exactly as the spec reads.

    unit (N, q') screened unit rows; pos (N, 3) float32 positions; pivots (kappa,).
    Returns the R selected indices in selection order and sim_cols (R, N), row j holding
    S[:, order[j]] (what the fusion needs). BSS scores are float32; tau is a float64
    (0.8, 0.9, ...), so a score is compared with tau's exact value.
    """
    n = unit.shape[0]
    one, scale = np.float32(1.0), np.float32(spatial_lambda * nf)
    max_sim = np.full(n, -np.inf, np.float32)
    min_sq_dist = np.full(n, np.inf, np.float32)  # d_i = sqrt of it (sqrt is monotone)
    selected = np.zeros(n, np.bool_)
    order = np.empty(num_retain, np.int64)
    sim_cols = np.empty((num_retain, n), np.float32)
    count = pivots.shape[0]
    for j in range(count):
        order[j] = pivots[j]
    _add_tokens(0, count, order, unit, pos, selected, sim_cols, max_sim, min_sq_dist)

    candidates, ranked = np.empty(n, np.int64), np.empty(n, np.int64)
    scores = np.empty(n, np.float32)
    batch = np.empty(token_batch, np.float32)
    take = np.empty(token_batch, np.bool_)
    tau = threshold
    while count < num_retain:
        size = 0
        for i in range(n):  # ascending: ties keep index order
            if not selected[i]:
                candidates[size] = i
                scores[size] = (one + scale * np.sqrt(min_sq_dist[i])) * max_sim[i]
                size += 1
        by_score = _stable_argsort(scores[:size])
        for m in range(size):
            ranked[m] = candidates[by_score[m]]
        for start in range(0, size, token_batch):
            members = ranked[start:min(start + token_batch, size)]
            accepted = 0
            for m in range(members.shape[0]):  # scored against Sel as it was before this batch
                i = members[m]
                batch[m] = (one + scale * np.sqrt(min_sq_dist[i])) * max_sim[i]
                take[m] = batch[m] < tau
                accepted += take[m]
            if accepted > num_retain - count:
                # Only the room's lowest scores (stable: earlier member first).
                take[:] = False
                for m in _stable_argsort(batch[:members.shape[0]])[:num_retain - count]:
                    take[m] = True
                accepted = num_retain - count
            for m in range(members.shape[0]):  # in batch order
                if take[m]:
                    order[count] = members[m]
                    count += 1
            _add_tokens(count - accepted, count, order, unit, pos, selected, sim_cols, max_sim,
                        min_sq_dist)
            if count == num_retain or (start == 0 and accepted == 0):
                break
        tau += tau_step
    return order, sim_cols


@_jit
def similarity_weighted_aggregation(hidden, order, sim_cols, merge_weight, min_weight_sum):
    """Stage 3. Each discarded token joins its most similar retained token (first maximum:
    the earliest selected wins a tie), weighted by that similarity.

    hidden (N, D); order (R,) in selection order; sim_cols (R, N) from stage 2.
    Returns keep (R,) ascending and the fused states (R, D) float32 in keep order.
    Each retained token's aggregate is summed in one (D,) buffer that stays in L1, its
    members four rows at a time.
    """
    n, d = hidden.shape
    r = order.shape[0]
    slot_of = np.full(n, -1, np.int64)  # slot of each retained token in ``order``; -1: discarded
    for j in range(r):
        slot_of[order[j]] = j
    weight = np.full(n, -np.inf, np.float32)  # w_i = S[i, a(i)]
    target = np.zeros(n, np.int64)  # a(i) as a slot of ``order``
    for j in range(r):
        row = sim_cols[j]
        for i in range(n):
            if row[i] > weight[i]:
                weight[i], target[i] = row[i], j
    weight_sum = np.zeros(r, np.float32)  # W_j
    sizes = np.zeros(r + 1, np.int64)
    for i in range(n):
        if slot_of[i] < 0:
            weight_sum[target[i]] += weight[i]
            sizes[target[i] + 1] += 1
    # The discarded tokens of each slot, ascending (a counting sort by slot).
    start = sizes  # prefix sums in place: start[j] .. start[j + 1] are slot j's members
    for j in range(r):
        start[j + 1] += start[j]
    fill = np.empty(r, np.int64)  # next free position of each slot
    for j in range(r):
        fill[j] = start[j]
    members = np.empty(start[r], np.int64)
    for i in range(n):
        if slot_of[i] < 0:
            members[fill[target[i]]] = i
            fill[target[i]] += 1

    keep, rank = np.empty(r, np.int64), np.empty(r, np.int64)  # rank[k]: slot of keep[k]
    k = 0
    for i in range(n):
        if slot_of[i] >= 0:
            keep[k], rank[k] = i, slot_of[i]
            k += 1
    fused = np.empty((r, d), np.float32)
    beta = np.float32(merge_weight)
    agg = np.empty(d, np.float32)
    for k in range(r):
        j, h, out = rank[k], hidden[keep[k]], fused[k]
        if not weight_sum[j] > 0:  # no member, or W_j <= 0: unchanged
            for c in range(d):
                out[c] = h[c]
            continue
        scale = np.float32(1.0) / max(weight_sum[j], np.float32(min_weight_sum))
        lo, hi = start[j], start[j + 1]
        quads = hi - (hi - lo) % 4
        agg[:] = 0.0
        for m in range(lo, quads, 4):
            i0, i1, i2, i3 = members[m], members[m + 1], members[m + 2], members[m + 3]
            w0, w1 = weight[i0] * scale, weight[i1] * scale
            w2, w3 = weight[i2] * scale, weight[i3] * scale
            a0, a1, a2, a3 = hidden[i0], hidden[i1], hidden[i2], hidden[i3]
            for c in range(d):
                agg[c] += (w0 * a0[c] + w1 * a1[c]) + (w2 * a2[c] + w3 * a3[c])
        for m in range(quads, hi):
            w0, a0 = weight[members[m]] * scale, hidden[members[m]]
            for c in range(d):
                agg[c] += w0 * a0[c]
        for c in range(d):
            out[c] = beta * h[c] + (np.float32(1.0) - beta) * agg[c]
    return keep, fused
