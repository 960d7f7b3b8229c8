"""Model families: where each model's visual spans are, and its family-specific seams."""

from pruning.models.base import Family, Span, family_for, register_family

# Importing a family file registers it.
from pruning.models import llava, llava_onevision, qwen2_5_vl, qwen2_vl, qwen3_vl  # noqa: E402,F401

__all__ = ["Family", "Span", "family_for", "register_family"]
