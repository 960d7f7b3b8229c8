"""LLaVA-1.5 (``LlavaForConditionalGeneration``): every image is a square span.

With the 'default' feature strategy the CLS token is dropped, so each image is
(image_size / patch_size)^2 ``<image>`` tokens: 576 = 24 x 24 for a 336px CLIP.
Images of one sample may sit back to back; they are split into spans of that size.
"""

from __future__ import annotations

import torch

from pruning import vision
from pruning.models.base import Family, Span, register_family, spans_from_tokens


class LlavaFamily(Family):
    model_types = ("llava",)

    def spans(self, model, input_ids: torch.Tensor, inputs: dict) -> list[list[Span]]:
        config = model.config
        vision = config.vision_config
        side = vision.image_size // vision.patch_size
        if config.vision_feature_select_strategy != "default":
            raise ValueError("LLaVA pruning needs vision_feature_select_strategy='default' "
                             f"(square grids), got {config.vision_feature_select_strategy!r}")
        count = int((input_ids == config.image_token_id).sum())
        if count % (side * side):
            raise ValueError(f"{count} <image> tokens is not a multiple of {side}x{side}")
        return spans_from_tokens(input_ids, config.image_token_id,
                                 [(1, side, side)] * (count // (side * side)), "image")

    def vision_hooks(self, model, record) -> list:
        """The CLS row of the block whose output LLaVA takes (``vision_feature_layer``)."""
        config = model.config
        tower = model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        attn = layers[vision.feature_block(config.vision_feature_layer, len(layers))].self_attn
        side = config.vision_config.image_size // config.vision_config.patch_size

        def capture(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)  # (images, 1 + P, D)
            attention, keys = vision.cls_attention(module, hidden)
            record([vision.VisionItem(a, k, (1, side, side)) for a, k in zip(attention, keys)])

        return [attn.register_forward_pre_hook(capture, with_kwargs=True)]


register_family(LlavaFamily())
