"""Qwen3-VL: Qwen2-VL's span layout plus DeepStack.

Video frames are separated by timestamp text ("<0.5 seconds><|vision_start|>...");
``spans_from_tokens`` follows a video's placeholders across them. DeepStack adds
visual features from inner vision layers to the outputs of the first decoder layers
at the visual positions (``visual_pos_masks``). Once pruning has shortened the
sequence, those additions must follow the kept tokens and skip the pruned ones: the
text model's ``_deepstack_process`` is wrapped on the instance to do so.
"""

from __future__ import annotations

import torch

from pruning.models.base import InstanceAttribute, register_family
from pruning.models.qwen2_vl import Qwen2VLFamily


class Qwen3VLFamily(Qwen2VLFamily):
    model_types = ("qwen3_vl",)

    def install(self, model, handle) -> list:
        text = self.text_model(model)
        original = text._deepstack_process

        def deepstack_on_kept(hidden_states, visual_pos_masks, visual_embeds):
            if not handle.sequence_is_pruned:  # layers before K, or nothing removed
                return original(hidden_states, visual_pos_masks, visual_embeds)
            keep_index = handle.keep_index  # (B, S') original positions, -1 for padding
            masks = visual_pos_masks.to(keep_index.device)
            row_of = masks.flatten().cumsum(0).view_as(masks) - 1  # (B, S) row in visual_embeds
            safe = keep_index.clamp_min(0)
            kept = masks.gather(1, safe) & (keep_index >= 0)  # (B, S')
            rows = row_of.gather(1, safe)[kept]
            return original(hidden_states, kept, visual_embeds[rows.to(visual_embeds.device)])

        text._deepstack_process = deepstack_on_kept
        return [InstanceAttribute(text, "_deepstack_process", deepstack_on_kept)]


register_family(Qwen3VLFamily())
