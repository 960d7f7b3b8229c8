"""Qwen2.5-VL: the same span layout as Qwen2-VL (windowed vision attention only changes
the encoder; the merged LLM tokens are still raster-ordered over (t, h/2, w/2))."""

from __future__ import annotations

from pruning.models.base import register_family
from pruning.models.qwen2_vl import Qwen2VLFamily


class Qwen2_5_VLFamily(Qwen2VLFamily):
    model_types = ("qwen2_5_vl",)


register_family(Qwen2_5_VLFamily())
