"""A literal transcription of what VisionZip's authors' code computes for one image.

Source: github.com/dvlab-research/VisionZip, ``visionzip/clip_encoder.py``
``CLIPVisionTower_VisionZip.forward`` (selection and merge), with the metric of
``visionzip/utils.py`` ``CLIPAttention_forward`` (``raw_key_states.mean(1)``: the
layer's keys averaged over heads). Written independently of
``pruning.methods.visionzip``: their batch-of-one tensor steps, their ``topk``, their
boolean masks and one-hot ``bmm``, a CLS token at index 0 as in CLIP's sequence.

Departures, on purpose (each is a documented deviation of the method):
- The patch tokens are the input; a CLS row (zeros, never selected by attention since
  their code always keeps index 0) is prepended so the indices run as theirs do, and
  dropped from the output: the LLM has no token for it. ``dominant_num`` is the number
  of dominant *patches* (their ``dominant - 1``).
- Float32 throughout.
"""

from __future__ import annotations

import torch


def visionzip_ref(cls_attention: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor,
                  dominant_num: int, contextual_num: int):
    """cls_attention: (heads, N) the CLS query's attention to the N patches;
    keys: (heads, N, d) the patches' keys per head; hidden: (N, D) the patches' states.

    Returns (keep (D + C,) ascending patch indices, their states (D + C, D) in keep order)."""
    heads, n = cls_attention.shape
    hidden_states = torch.cat([torch.zeros(1, hidden.shape[1]), hidden.float()])[None]  # (1, 1 + N, D)
    metric = torch.cat([torch.zeros(heads, 1, keys.shape[2]), keys.float()], dim=1)[None].mean(1)  # (1, 1 + N, d)

    # Dominant tokens: CLS attention summed over heads, topk, shifted past CLS, plus CLS.
    cls_attention_sum = cls_attention.float()[None].sum(dim=1)  # (1, N)
    topk_indices = cls_attention_sum.topk(dominant_num, dim=1).indices + 1
    all_indices = torch.cat([torch.zeros((1, 1), dtype=topk_indices.dtype), topk_indices], dim=1)
    mask = torch.ones_like(hidden_states[:, :, 0], dtype=torch.bool).scatter_(1, all_indices, False)
    dominant_tokens = hidden_states.masked_select(~mask.unsqueeze(-1)).view(1, dominant_num + 1, -1)

    # The rest, in index order; their metric normalised.
    metric_filtered = metric[mask].view(1, n + 1 - (dominant_num + 1), metric.shape[2])
    hidden_states_filtered = hidden_states.masked_select(mask.unsqueeze(-1)).view(
        1, n + 1 - (dominant_num + 1), hidden_states.shape[2])
    metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)

    # Contextual tokens: evenly spaced targets, every other token joins its most similar.
    step = max(1, metric_normalized.shape[1] // contextual_num)
    target_indices = torch.arange(0, metric_normalized.shape[1], step)[:contextual_num]
    target_tokens = metric_normalized[:, target_indices, :]
    not_target = ~torch.isin(torch.arange(metric_normalized.shape[1]), target_indices)
    tokens_to_merge = metric_normalized[:, not_target, :]
    similarity = torch.bmm(tokens_to_merge, target_tokens.transpose(1, 2))
    assign_one_hot = torch.zeros(1, tokens_to_merge.shape[1], contextual_num)
    assign_one_hot.scatter_(2, similarity.argmax(dim=2).unsqueeze(-1), 1)
    counts = assign_one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
    hidden_to_merge = hidden_states_filtered[:, not_target, :]
    aggregated_hidden = torch.bmm(assign_one_hot.transpose(1, 2), hidden_to_merge) / counts
    target_hidden = hidden_states_filtered[:, target_indices, :]
    contextual_tokens = target_hidden + aggregated_hidden

    # Back to patch indices (the CLS token dropped): dominant in index order, then targets.
    dominant_patches = (~mask[0]).nonzero().squeeze(1)[1:] - 1
    rest_patches = mask[0].nonzero().squeeze(1) - 1
    positions = torch.cat([dominant_patches, rest_patches[target_indices]])
    states = torch.cat([dominant_tokens[0, 1:], contextual_tokens[0]])
    order = torch.argsort(positions)
    return positions[order], states[order]
