"""Qwen2-VL: image and video spans from ``image_grid_thw`` / ``video_grid_thw``.

The grids are in vision patches; the merger joins ``spatial_merge_size``^2 patches
into one LLM token, so an image of grid (1, 28, 40) is a (1, 14, 20) span of 280
``<|image_pad|>`` tokens, and a video of grid (8, 16, 16) a (8, 8, 8) span.
"""

from __future__ import annotations

import torch

from pruning.models.base import Family, Span, merge_spans, register_family, spans_from_tokens


class Qwen2VLFamily(Family):
    model_types = ("qwen2_vl",)
    input_names = ("image_grid_thw", "video_grid_thw")

    def spans(self, model, input_ids: torch.Tensor, inputs: dict) -> list[list[Span]]:
        config = model.config
        merge = config.vision_config.spatial_merge_size
        per_kind = []
        for kind, key, token_id in (("image", "image_grid_thw", config.image_token_id),
                                    ("video", "video_grid_thw", config.video_token_id)):
            grids = inputs.get(key)
            grids = [] if grids is None else [(t, h // merge, w // merge) for t, h, w in grids.tolist()]
            per_kind.append(spans_from_tokens(input_ids, token_id, grids, kind))
        return merge_spans(*per_kind)


register_family(Qwen2VLFamily())
