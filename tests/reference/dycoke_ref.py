"""A transcription of DyCoke's temporal token merging (``dycole_ttm`` in the authors'
``llava/model/llava_arch.py``), for one video's flattened frame tokens.

Written from their steps, not from ``pruning.methods.dycoke``: pairs (0, 1), (2, 3), ...
keep the second frame's ``int((1 - K) * P)`` tokens least similar to the first (cosine
at the same cell, ``topk(largest=False)``); then windows of four starting at 0, 4, ...
up to ``T - 4`` exclusive replace the third frame by its tokens least similar to the
first; the per-frame pieces are concatenated in frame order. Returns the kept indices
into the input (their code returns the states; the tokens kept within a frame are
in ``topk`` order there, so we return each frame's indices as ``topk`` gives them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ttm(features: torch.Tensor, tokens_per_frame: int, merging_ratio: float = 0.7) -> list[torch.Tensor]:
    """features (T * P, D) -> per frame, the kept indices into ``features`` (their order)."""
    p = tokens_per_frame
    t_total = features.shape[0] // p
    keep_count = int((1 - merging_ratio) * p)

    def frame(t):
        return features[t * p:(t + 1) * p]

    def least_similar(a, b):
        sim = F.cosine_similarity(F.normalize(a, dim=1), F.normalize(b, dim=1), dim=1)
        return sim.topk(keep_count, largest=False).indices

    pieces = []
    for t in range(0, t_total - 1, 2):
        pieces.append(torch.arange(t * p, (t + 1) * p))
        pieces.append((t + 1) * p + least_similar(frame(t), frame(t + 1)))
    for t in range(0, t_total - 4, 4):
        pieces[t] = torch.arange(t * p, (t + 1) * p)
        pieces[t + 2] = (t + 2) * p + least_similar(frame(t), frame(t + 2))
    return pieces
