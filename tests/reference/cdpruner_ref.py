"""A transcription of CDPruner's selection (``encode_images`` in the authors'
``llava/model/llava_arch.py``) for one image (their batch of one).

Written from their steps, not from ``pruning.methods.cdpruner``: cosine similarity of
the projected features; relevance as the negated mean cosine of the vision embeddings
to the text embeddings, min-max normalised with their ``+ 1e-6``; kernel
``r_i S_ij r_j``; ``visual_token_num`` steps of the fast greedy MAP with their (T, B, N)
Cholesky buffer and einsum update; indices sorted.
"""

from __future__ import annotations

import torch


def cdpruner_select(image_features, image_embeds, text_embeds, visual_token_num: int) -> torch.Tensor:
    """image_features (N, D), image_embeds (N, C), text_embeds (M, C) -> kept indices (T,)."""
    image_features, image_embeds = image_features[None], image_embeds[None]  # B = 1
    b, n, _ = image_features.shape
    image_normalized = (image_features / image_features.norm(dim=-1, keepdim=True)).float()
    similarity = torch.matmul(image_normalized, image_normalized.transpose(1, 2))
    image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    relevance = torch.matmul(image_embeds, text_embeds.t())
    relevance = (-relevance).mean(dim=-1)
    relevance = (relevance - relevance.min() + 1e-6) / (relevance.max() - relevance.min())
    kernel = relevance.unsqueeze(2) * similarity * relevance.unsqueeze(1)
    cis = torch.zeros((visual_token_num, b, n))
    di2s = torch.diagonal(kernel, dim1=1, dim2=2).clone()
    select_idx = torch.empty((visual_token_num, b), dtype=torch.long)
    batch = torch.arange(b)
    for i in range(visual_token_num):
        j = torch.argmax(di2s, dim=-1)
        select_idx[i] = j
        eis = (kernel[batch, j] - torch.einsum("tb,tbn->bn", cis[:i, batch, j], cis[:i])) \
            / torch.sqrt(di2s[batch, j]).unsqueeze(-1)
        cis[i, :, :] = eis
        di2s -= torch.square(eis)
        di2s[batch, j] = -float("inf")
    return torch.sort(select_idx.t()).values[0]
