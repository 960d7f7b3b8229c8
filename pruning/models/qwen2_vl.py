"""Qwen2-VL: image and video spans from ``image_grid_thw`` / ``video_grid_thw``.

The grids are in vision patches; the merger joins ``spatial_merge_size``^2 patches
into one LLM token, so an image of grid (1, 28, 40) is a (1, 14, 20) span of 280
``<|image_pad|>`` tokens, and a video of grid (8, 16, 16) a (8, 8, 8) span.
"""

from __future__ import annotations

import torch

from pruning import vision
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

    def vision_block(self, vision_config) -> int:
        """The encoder block whose attention gives the vision signals: the last one."""
        return vision_config.depth - 1

    def vision_token_order(self, visual, grid_thw: torch.Tensor):
        """Permutation from the blocks' token order to raster order (None: already raster)."""
        return None

    def vision_hooks(self, model, record) -> list:
        """Received attention per frame in ``vision_block``, merged to LLM tokens."""
        visual = model.model.visual
        merge = model.config.vision_config.spatial_merge_size
        call = {}

        def on_encoder(module, args, kwargs):
            call["grid_thw"] = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)

        def capture(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)  # (S, D) normed
            attention, keys = vision.packed_attention(module, hidden, kwargs["cu_seqlens"],
                                                      kwargs["position_embeddings"])
            grid_thw = call["grid_thw"]
            order = self.vision_token_order(visual, grid_thw)
            record(vision.merged_items(attention, keys, grid_thw, merge, order))

        attn = visual.blocks[self.vision_block(model.config.vision_config)].attn
        return [visual.register_forward_pre_hook(on_encoder, with_kwargs=True),
                attn.register_forward_pre_hook(capture, with_kwargs=True)]


register_family(Qwen2VLFamily())
