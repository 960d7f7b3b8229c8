"""SparseVLM (Zhang et al., ICML 2025): text-guided visual token sparsification with
token recycling, at several layers.

Follows the authors' v1.0 (github.com/Gumpest/SparseVLMs: ``score.py``
``attn_postprocess_topk``, the sparsification block of ``modelling_sparse_llama.py``
and ``cluster_and_merge`` in ``utils.py``). At each sparse layer:

1. raters: the text tokens after the image whose relation to the visual tokens is above
   average: ``softmax_text(V T^T)`` of the LLM's input embeddings (raw dot products),
   averaged over the visual tokens, kept where it exceeds its mean;
2. rank: the layer's attention averaged over heads, the raters' rows at the visual
   columns, averaged over raters; the top tokens are kept;
3. recycle: of the dropped tokens, the ``recycle_ratio`` (0.3) highest ranked plus one
   are clustered by DPC-kNN (density from the ``c`` nearest neighbours, distance
   ``||x - y|| / sqrt(D)``, centres by density x distance to a denser token) into
   ``c = int(pool * cluster_ratio) + 1`` clusters, and each cluster's mean joins the
   kept tokens.

The authors prune the output of decoder layers 2, 6 and 15 with those layers' own
attention; here a stage before layer K reads layer K-1's attention (``text_attention``),
so the default stages are the same places: before layers 3, 7 and 16. Deliberate
deviations:

- counts: each stage keeps exactly its R (kept tokens plus clusters), from the config's
  stages (the rate split geometrically, or explicit per-stage rates); the authors' counts
  come from fixed tables per retained total (e.g. 300, 200, 110 kept + clusters at
  "192") and always drop at least one token. R is split into kept tokens and the
  clusters their formula gives for the rest (the larger kept count where two add up to R;
  all R clusters when even dropping every token gives more than R clusters).
- raters are chosen at each stage from the input embeddings of that stage's survivors
  (the first stage: every token of the span, as the authors' one choice) and of the text
  after the span; the authors choose them once, over all visual tokens. One image with a
  text prompt after it is their setting; each span here has its own raters among the
  text after it. No rater above the mean (all equal) uses every text token; no text after
  the span ranks every token equal (ties to the lower index).
- recycled tokens: each cluster's mean takes the slot (and position id) of its centre
  token, so the kept sequence keeps its order; the authors insert the clusters after the
  kept visual tokens and renumber positions (v1.0 truncates ``position_ids``), which
  ``positions: renumbered`` approximates.
- determinism: the authors add ``rand * 1e-6`` to the densities to break ties; here a tie
  goes to the lower index, as do ties in the ranking (their ``topk`` leaves them to the
  kernel). Scores are float32.
- v2.0's changes (attention gravity correction, head selection, no merging) are not
  implemented.
"""

from __future__ import annotations

import torch

from pruning.methods import checks
from pruning.methods.registry import Param, Selection, register

PARAMS = {
    "recycle_ratio": Param(float, 0.3, "fraction of a stage's dropped tokens (plus one) recycled into "
                                       "clusters; 0 drops without recycling", 0.0, 1.0),
    "cluster_ratio": Param(float, 0.1, "clusters per recycled token (plus one)", 0.0, 1.0),
}


@register("sparsevlm", signals=("hidden_states", "input_embeddings", "text_input_embeddings", "text_attention"),
          default_layer=3, min_layer=1, params=PARAMS, default_stages=(3, 7, 16))
def select(hidden_states: torch.Tensor, input_embeddings: torch.Tensor, text_input_embeddings: torch.Tensor,
           text_attention: torch.Tensor, num_retain: int, *, recycle_ratio: float = 0.3,
           cluster_ratio: float = 0.1) -> Selection:
    """Keep the span's R tokens: the best ranked by the text raters, plus the recycled
    clusters' means in their centres' slots.

    Args:
        hidden_states: (N, D) the span's states entering the stage's layer (recycled from).
        input_embeddings: (N, D) the span's tokens' input embeddings (raters from).
        text_input_embeddings: (M, D) the input embeddings of the text tokens after the span.
        text_attention: (heads, M, N) those text tokens' attention to the span in the
            layer before.
        num_retain: R (kept tokens plus clusters).
        recycle_ratio, cluster_ratio: see ``PARAMS``.
    Returns:
        Selection with ``keep`` (min(R, N),) ascending and the kept states (the clusters'
        means at their centres).

    Example: N=20, R=5, ranks 19 > 18 > ... > 0 (token i ranked i): dropped 16 -> pool
    int(16 * 0.3) + 1 = 5 tokens, int(5 * 0.1) + 1 = 1 cluster, so 4 kept: 16..19, and
    the cluster of the pool 11..15 (dropped tokens ranked highest) sits at its centre.
    """
    checks.matrix("hidden_states", hidden_states)
    checks.positive_int("num_retain", num_retain)
    for name, value in (("recycle_ratio", recycle_ratio), ("cluster_ratio", cluster_ratio)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    n = hidden_states.shape[0]
    if text_attention.shape[-1] != n or text_attention.shape[1] != text_input_embeddings.shape[0] or \
            input_embeddings.shape[0] != n:
        raise ValueError(f"text_attention {tuple(text_attention.shape)} does not match {n} visual and "
                         f"{text_input_embeddings.shape[0]} text tokens")
    count = min(num_retain, n)
    if count == n:
        return Selection(torch.arange(n, device=hidden_states.device))
    relation = rank(input_embeddings, text_input_embeddings, text_attention)
    order = torch.sort(relation, descending=True, stable=True).indices
    top, clusters = split(n, count, recycle_ratio, cluster_ratio)
    kept = order[:top]
    states = hidden_states[kept]
    if clusters:
        pool = order[top:top + recycled(n - top, recycle_ratio)]  # the dropped, best ranked first
        merged, centres = cluster_and_merge(hidden_states[pool].float(), clusters)
        kept = torch.cat([kept, pool[centres]])
        states = torch.cat([states, merged.to(hidden_states.dtype)])
    keep, slot = torch.sort(kept)
    return Selection(keep, states[slot])


def rank(visual: torch.Tensor, text: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """(N,) the raters' head-averaged attention to each visual token; raters are chosen on
    the input embeddings ``visual`` (N, D) and ``text`` (M, D)."""
    if text.shape[0] == 0:
        return torch.zeros(visual.shape[0], device=visual.device)
    relation = (visual.float() @ text.float().T).softmax(dim=1).mean(dim=0)  # (M,)
    raters = torch.where(relation > relation.mean())[0]
    if raters.numel() == 0:
        raters = torch.arange(text.shape[0], device=text.device)
    return attention.float().mean(dim=0)[raters].mean(dim=0)


def recycled(dropped: int, recycle_ratio: float) -> int:
    """How many of ``dropped`` tokens are recycled: the authors' ``int(d * 0.3) + 1``."""
    if dropped == 0 or recycle_ratio == 0:
        return 0
    return min(dropped, int(dropped * recycle_ratio) + 1)


def split(n: int, count: int, recycle_ratio: float, cluster_ratio: float) -> tuple[int, int]:
    """(kept, clusters) with kept + clusters == count, the clusters those of the authors'
    formula for the n - kept dropped tokens (all clusters when even none kept is too many).

    Example: n=576, count=64 -> 48 kept + 16 clusters (528 dropped, pool 159, 16 clusters).
    """
    def clusters_for(dropped: int) -> int:
        pool = recycled(dropped, recycle_ratio)
        return int(pool * cluster_ratio) + 1 if pool else 0

    # kept + clusters_for(n - kept) grows by 0 or 1 per kept token: the largest kept at
    # or under count is exact, unless the clusters alone exceed count.
    for kept in range(count, -1, -1):
        clusters = clusters_for(n - kept)
        if kept + clusters <= count:
            return (kept, clusters) if kept + clusters == count else (0, count)
    return 0, count


def cluster_and_merge(x: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN: x (P, C) into ``clusters`` clusters -> (means (clusters, C), centres (clusters,)).

    Density ``exp(-mean d^2)`` over each token's ``clusters`` nearest (itself included);
    a token's distance is to its nearest denser token (the largest distance for the
    densest); centres are the top density x distance. Ties: the lower index is denser
    and ranks first. Members are averaged with the authors' ``1 / (count + 1e-6)``."""
    p, c = x.shape
    dist = torch.cdist(x[None], x[None], compute_mode="donot_use_mm_for_euclid_dist")[0] / c ** 0.5  # (P, P)
    density = (-(torch.topk(dist, k=clusters, dim=1, largest=False).values ** 2).mean(dim=1)).exp()
    index = torch.arange(p, device=x.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (index[None, :] < index[:, None]))  # [i, j]: j denser than i
    to_denser = torch.where(denser, dist, dist.max()).min(dim=1).values
    score = to_denser * density
    centres = torch.sort(score, descending=True, stable=True).indices[:clusters]
    member = dist[centres].argmin(dim=0)  # (P,) nearest centre, ties to the first
    member[centres] = torch.arange(clusters, device=x.device)
    counts = torch.zeros(clusters, device=x.device).index_add_(0, member, torch.ones(p, device=x.device)) + 1e-6
    means = torch.zeros(clusters, c, device=x.device).index_add_(0, member, x / counts[member, None])
    return means, centres
