"""Load a VLM and its processor from a checkpoint path, a hub id or a ``tiny:`` name.

Real and tiny models go through the same loading code: a ``tiny:<family>`` spec is
first built (random weights from a fixed seed, see ``pipeline.tiny``) and saved with
``save_pretrained`` into a cache directory, then loaded from there exactly like a
downloaded checkpoint. So what tests exercise on tiny models (config parsing, the
processor's saved settings, the chat template) is what runs on real ones, and the
cached directory is itself a valid ``spec``.

The cache is safe for several processes (Ray actors) starting at once: each builds
into its own temporary directory next to the cache entry and renames it into place;
a rename never leaves a half-written entry, and the loser of a race uses the
winner's copy. Builds are deterministic, so either copy is the same.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from pipeline import tiny

TINY_PREFIX = "tiny:"
# Random-weight builds of every family, and the trained tiny models shipped in the package.
TINY_MODELS: tuple[str, ...] = tuple(TINY_PREFIX + name for name in tiny.family_names())
TRAINED_TINY_MODELS: tuple[str, ...] = tuple(TINY_PREFIX + name for name in tiny.TRAINED)
DEFAULT_TINY_CACHE = Path("~/.cache/vlm-prune-eval/tiny")

# torch.manual_seed is process-global: two threads building at once would interleave
# their random draws, so builds within one process take turns.
_BUILD_LOCK = threading.Lock()


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    cache_dir: str | os.PathLike | None = None,
    device_map: str | dict | None = None,
    **load_kwargs,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model (in eval mode, on ``device``) and processor named by ``spec``.

    spec:       a local checkpoint directory, a hub id, or one of ``TINY_MODELS`` and
                ``TRAINED_TINY_MODELS``.
    dtype:      a torch dtype or its name ("bfloat16"); None keeps the checkpoint's
                (float32 for tiny models).
    cache_dir:  where tiny checkpoints are built (default ~/.cache/vlm-prune-eval/tiny);
                real checkpoints use the Hugging Face cache as usual.
    device_map: instead of ``device``, the model split over devices by accelerate
                (``"auto"``: every GPU this process sees, e.g. a Ray actor's), with any
                other ``from_pretrained`` arguments (``max_memory``, ``offload_folder``).
    """
    path = _checkpoint(spec, cache_dir)
    # The auto class picks the family's class (Qwen2VLForConditionalGeneration, ...)
    # from the config's model_type.
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=_resolve_dtype(dtype), attn_implementation=attn_implementation,
        **({"device_map": device_map} if device_map is not None else {}), **load_kwargs
    )
    processor = AutoProcessor.from_pretrained(path)
    if device_map is None:
        model = model.to(device)
    return model.eval(), processor


def load_processor(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> ProcessorMixin:
    """The processor of ``spec`` alone (no weights): for stages that only prepare inputs."""
    return AutoProcessor.from_pretrained(_checkpoint(spec, cache_dir))


def model_config(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None):
    """The transformers config of ``spec`` without loading weights (for validation)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(_checkpoint(spec, cache_dir))


def _checkpoint(spec: str | os.PathLike, cache_dir: str | os.PathLike | None) -> str | os.PathLike | Path:
    """What ``from_pretrained`` gets for ``spec``: a tiny model's folder, else ``spec``."""
    if isinstance(spec, str) and spec.startswith(TINY_PREFIX):
        return tiny_checkpoint(spec[len(TINY_PREFIX):], cache_dir)
    return spec


def tiny_checkpoint(family: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory of the tiny ``family`` checkpoint, building it on first use.

    Example: ``tiny_checkpoint("qwen2_vl")`` -> ``~/.cache/vlm-prune-eval/tiny/qwen2_vl-v1``.
    A trained tiny model (``tiny.TRAINED``, e.g. "qwen2_vl_synth") is not built: its
    folder inside the package is returned as it is.
    """
    if family in tiny.TRAINED:
        path = tiny.TRAINED[family]
        if not _is_checkpoint(path):
            raise FileNotFoundError(f"{TINY_PREFIX + family}: no checkpoint at {path}; train it with "
                                    f"`python jobs/train_tiny.py --out {path}`")
        return path
    if family not in tiny.family_names():
        known = ", ".join(TINY_MODELS + TRAINED_TINY_MODELS)
        raise ValueError(f"unknown tiny model {TINY_PREFIX + family!r}; known tiny models: {known}")
    build = tiny.get_builder(family)
    root = Path(cache_dir or DEFAULT_TINY_CACHE).expanduser()
    final = root / f"{family}-v{tiny.VERSION}"
    if _is_checkpoint(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK:
        if _is_checkpoint(final):
            return final
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=root))
        try:
            model, processor = build()
            model.save_pretrained(scratch)
            processor.save_pretrained(scratch)
            os.chmod(scratch, 0o755)  # mkdtemp makes it private; the cache entry should not be
            try:
                os.replace(scratch, final)
            except OSError:
                # Another process renamed its build into place first (ENOTEMPTY/EEXIST).
                if not _is_checkpoint(final):
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return final


def _is_checkpoint(path: Path) -> bool:
    # Entries only appear by rename of a finished build, so one file marks a whole one.
    return (path / "config.json").is_file()


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    """A torch dtype, or "auto" (the checkpoint's own) for None/"auto"."""
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype or a name such as 'bfloat16'")
    return resolved
