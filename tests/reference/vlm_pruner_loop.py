"""A literal, one-batch-at-a-time transcription of ../shared/spec/vlm-pruner.md.

Written independently of ``pruning.methods.vlm_pruner`` on purpose: full similarity and
distance matrices, Python lists for the selected set, and every batch re-scored against
the current selection exactly as the spec's loop reads. The tests compare the fast
implementation with it, and ``benchmarks/selection.py`` times both side by side.
"""

from __future__ import annotations

import math

import torch


def select_loop(hidden_states, key_states, grid, num_retain, *, num_pivots=4, top_channels=256,
                threshold=0.8, spatial_lambda=0.5, token_batch=16, merge_weight=0.3,
                temporal_scale=1.0, positions=None):
    """``positions``: the tokens' raster cells in ``grid`` (default 0 .. N-1).

    Returns (keep ascending (R,), fused hidden states (R, D) in keep order, selection order)."""
    n = hidden_states.shape[0]
    r = min(num_retain, n)
    if r == n:
        return torch.arange(n), hidden_states, list(range(n))
    h = hidden_states.float()
    k = key_states.float()

    # Stage 1: pivots.
    sel = [int(torch.argmax(k.abs().sum(dim=1)))]
    while len(sel) < min(num_pivots, r):
        nearest = torch.stack([(k - k[p]).norm(dim=1) for p in sel], dim=1).min(dim=1).values
        nearest[sel] = -1.0
        sel.append(int(torch.argmax(nearest)))

    # Precomputed once: screened cosine similarity and grid distances.
    variance = h.var(dim=0, unbiased=True).tolist()
    channels = sorted(range(h.shape[1]), key=lambda c: (-variance[c], c))[:top_channels]
    hs = h[:, channels]
    norm = hs.norm(dim=1).clamp_min(1e-8)
    sim = (hs @ hs.T) / (norm[:, None] * norm[None, :])  # (N, N)
    t, gh, gw = grid
    cells = range(n) if positions is None else [int(c) for c in positions]
    coords = [(i // (gh * gw) * temporal_scale, (i // gw) % gh, i % gw) for i in cells]
    pos = torch.tensor(coords, dtype=torch.float32)
    dist = (pos[:, None, :] - pos[None, :, :]).norm(dim=2)  # (N, N)
    nf = 1.0 / math.sqrt(gh * gh + gw * gw + (t * t if t > 1 else 0))

    sel = rounds_loop(sim, dist, nf, sel, r, threshold, spatial_lambda, token_batch)

    # Stage 3: similarity-weighted aggregation.
    chosen = torch.tensor(sel)
    discarded = torch.tensor([i for i in range(n) if i not in set(sel)])
    weight, target = sim[discarded][:, chosen].max(dim=1)  # first maximum = earliest selected
    fused = {}
    for slot, j in enumerate(sel):
        members = target == slot
        total = float(weight[members].sum())
        if bool(members.any()) and total > 0:
            agg = ((weight[members] / max(total, 1e-8))[:, None] * h[discarded[members]]).sum(dim=0)
            fused[j] = merge_weight * h[j] + (1.0 - merge_weight) * agg
        else:
            fused[j] = h[j]
    keep = sorted(sel)
    return torch.tensor(keep), torch.stack([fused[j] for j in keep]), sel


def rounds_loop(sim, dist, nf, pivots, r, threshold=0.8, spatial_lambda=0.5, token_batch=16):
    """Stage 2 alone, one batch at a time. sim, dist: (N, N); pivots: list of indices.
    Returns the selected indices in selection order."""
    n = sim.shape[0]
    sel = list(pivots)

    def bss(tokens):
        index = torch.tensor(tokens)
        chosen = torch.tensor(sel)
        max_sim = sim[index][:, chosen].max(dim=1).values
        min_dist = dist[index][:, chosen].min(dim=1).values
        return ((1.0 + spatial_lambda * min_dist * nf) * max_sim).tolist()

    # Stage 2: rounds of parallel greedy.
    tau = threshold
    while len(sel) < r:
        chosen = set(sel)
        candidates = [i for i in range(n) if i not in chosen]
        scores = bss(candidates)
        ranked = [c for _, c in sorted(zip(scores, candidates))]  # ties: lower index first
        for start in range(0, len(ranked), token_batch):
            batch = ranked[start:start + token_batch]
            batch_scores = bss(batch)
            accepted = [pos_ for pos_, s in enumerate(batch_scores) if s < tau]
            room = r - len(sel)
            if len(accepted) > room:
                lowest = sorted(range(len(batch)), key=lambda m: (batch_scores[m], m))[:room]
                accepted = sorted(lowest)
            sel.extend(batch[m] for m in accepted)
            if len(sel) == r or (start == 0 and not accepted):
                break
        tau += 0.1

    return sel
