"""Tiny random-weight VLMs of the real families, for tests and demos without downloads.

``build(name)`` returns ``(model, processor)`` in memory; ``pipeline.models`` saves it
to a cache directory and loads it back the same way as a real checkpoint.
"""

from pipeline.tiny.families import family_names, get_builder

# Bump when a builder, the corpus or a template changes, so stale caches are not reused.
VERSION = 1

__all__ = ["VERSION", "family_names", "get_builder"]
