"""A transcription of one SparseVLM (v1.0) sparsification step, for one sample (their
batch of one): ``attn_postprocess_topk`` in ``llava/model/language_model/score.py``, the
rater choice and the recycling block of ``modelling_sparse_llama.py``, and
``cluster_and_merge`` (DPC-kNN) of ``utils.py`` in the authors' repository.

Written from their steps, not from ``pruning.methods.sparsevlm``. ``noise`` is their
``torch.rand(...) * 1e-6`` added to the densities to break ties (mutual nearest
neighbours have equal densities). ``noise="index"`` stands for the one draw of that noise
that orders tied tokens by index, lower first (an infinitesimal noise decreasing with the
index); ``noise=None`` adds none.
"""

from __future__ import annotations

import torch


def text_raters(v_t: torch.Tensor, t_t: torch.Tensor) -> torch.Tensor:
    """v_t (N, D) visual states, t_t (M, D) text states -> the raters' indices into t_t."""
    m_v_t = (v_t @ t_t.T)[None]  # [1, N, M]
    m_v_t = m_v_t.softmax(2).mean(1)  # [1, M]
    return torch.where(m_v_t > m_v_t.mean())[1]


def postprocess_topk(attn: torch.Tensor, raters: torch.Tensor, keep: int):
    """attn (H, M, N): each text token's attention to the visual tokens; -> (mask (N,) bool,
    relation (N,))."""
    relation = attn.mean(0)[raters].mean(0)  # heads, then raters
    mask = torch.zeros_like(relation, dtype=torch.bool)
    _, indices = torch.topk(relation, min(keep, relation.shape[0] - 1))
    mask[indices] = True
    return mask, relation


def cluster_and_merge(x: torch.Tensor, cluster_num: int, noise="index"):
    """x (P, C) -> (merged (cluster_num, C), centers (cluster_num,) indices into x)."""
    x = x[None]
    b, n, c = x.shape
    dist_matrix = (x[:, :, None] - x[:, None, :]).norm(dim=-1, p=2) / (c ** 0.5)
    dist_nearest, _ = torch.topk(dist_matrix, k=cluster_num, dim=-1, largest=False)
    density = (-(dist_nearest ** 2).mean(dim=-1)).exp()
    if noise == "random":
        density = density + torch.rand(density.shape, dtype=density.dtype) * 1e-6
    mask = density[:, None, :] > density[:, :, None]
    if noise == "index":
        index = torch.arange(n)
        mask = mask | ((density[:, None, :] == density[:, :, None]) & (index[None, :] < index[:, None]))
    mask = mask.type(x.dtype)
    dist_max = dist_matrix.flatten(1).max(dim=-1)[0][:, None, None]
    dist, _ = (dist_matrix * mask + dist_max * (1 - mask)).min(dim=-1)
    score = dist * density
    _, index_down = torch.topk(score, k=cluster_num, dim=-1)
    idx_cluster = dist_matrix[0, index_down[0]].argmin(dim=0)[None]  # index_points, argmin over centers
    idx_cluster[0, index_down[0]] = torch.arange(cluster_num)
    all_weight = torch.zeros(cluster_num, 1).index_add_(0, idx_cluster[0], torch.ones(n, 1)) + 1e-6
    norm_weight = 1.0 / all_weight[idx_cluster[0]]
    merged = torch.zeros(cluster_num, c).index_add_(0, idx_cluster[0], x[0] * norm_weight)
    return merged, index_down[0]


def sparsify(states: torch.Tensor, attn: torch.Tensor, raters: torch.Tensor, keep: int):
    """One step on a span: states (N, D) leaving the layer, attn (H, M, N).

    Returns (kept indices (keep,) ascending, merged states (c, D), recycled pool's centers
    as indices into the span (c,))."""
    mask, relation = postprocess_topk(attn, raters, keep)
    dropped = torch.where(~mask)[0]
    pool_size = int(dropped.shape[0] * 0.3) + 1  # top 30%
    pool = dropped[relation[dropped].topk(pool_size)[1]]
    cluster_num = int(pool.shape[0] / 10) + 1
    merged, centers = cluster_and_merge(states[pool], cluster_num)
    return torch.where(mask)[0], merged, pool[centers]
