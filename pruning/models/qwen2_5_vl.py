"""Qwen2.5-VL: the same span layout as Qwen2-VL (windowed vision attention only changes
the encoder; the merged LLM tokens are still raster-ordered over (t, h/2, w/2))."""

from __future__ import annotations

import torch
from transformers.vision_utils import get_vision_window_index

from pruning.models.base import register_family
from pruning.models.qwen2_vl import Qwen2VLFamily


class Qwen2_5_VLFamily(Qwen2VLFamily):
    model_types = ("qwen2_5_vl",)

    def vision_block(self, vision_config) -> int:
        """The last full-attention block (the others attend within windows)."""
        return vision_config.fullatt_block_indexes[-1]

    def vision_token_order(self, visual, grid_thw: torch.Tensor) -> torch.Tensor:
        """The blocks see merged tokens in window order; the model restores raster order
        after its merger with ``argsort(window_index)``, and so do we."""
        window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                                  window_size=visual.window_size, patch_size=visual.patch_size)
        return torch.argsort(window_index).to(grid_thw.device)


register_family(Qwen2_5_VLFamily())
