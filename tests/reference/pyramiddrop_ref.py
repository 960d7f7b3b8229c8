"""A literal transcription of one PyramidDrop drop (``pdrop_rank_drop`` in the authors'
``llava/model/modeling_llama_pdrop.py``), for one sample without padding.

Written from their steps, not from ``pruning.methods.pyramiddrop``: the stage layer's
normed input through its q/k projections (rotary applied), the additive causal mask, a
float32 softmax of ``q k^T / sqrt(d)`` for the last instruction token, the mean over
heads, the image columns, ``topk(int(N * ratio))`` and the indices sorted.
"""

from __future__ import annotations

import math

import torch


def rank_drop(query_states, key_states, image_start: int, image_tokens: int, ratio: float) -> torch.Tensor:
    """query_states (H, S, d), key_states (H, S, d) (key heads already repeated), the image's
    first position and length; returns the kept image-local indices, ascending."""
    heads, s, d = query_states.shape
    causal = torch.full((s, s), torch.finfo(torch.float32).min).triu(1)  # additive 4-D mask, one sample
    text_query = query_states[:, s - 1:s, :]  # the last instruction token
    weights = text_query @ key_states.transpose(1, 2) / math.sqrt(d) + causal[s - 1:s]  # (H, 1, S)
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32)
    per_token = weights.mean(dim=0)[:, image_start:image_start + image_tokens].mean(dim=0)  # (N,)
    keep_length = int(image_tokens * ratio)
    return per_token.topk(keep_length).indices.sort().values
