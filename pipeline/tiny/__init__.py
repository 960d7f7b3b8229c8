"""Tiny VLMs of the real families, for tests and demos without downloads: random-weight
builds of each family, and ``qwen2_vl_synth``, trained on ``synthetic_fine``.

``build(name)`` returns ``(model, processor)`` in memory; ``pipeline.models`` saves it
to a cache directory and loads it back the same way as a real checkpoint.
"""

from pathlib import Path

from pipeline.tiny.families import family_names, get_builder

# Trained tiny models shipped inside the package (name -> checkpoint folder), made by
# jobs/train_tiny.py; ``load_model("tiny:<name>")`` loads them from there.
TRAINED = {"qwen2_vl_synth": Path(__file__).parent / "weights" / "qwen2_vl_synth"}

# Bump when a builder, the corpus or a template changes, so stale caches are not reused.
VERSION = 1

__all__ = ["TRAINED", "VERSION", "family_names", "get_builder"]
