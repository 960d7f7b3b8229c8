"""Frame sampling and decoding for the video benchmarks (decord, as lmms-eval does).

Frames are taken at the uniform indices ``linspace(0, n_frames - 1, count)`` rounded
down (../shared/spec/benchmarks.md), so a 10-frame video read with ``count=4`` gives
frames ``[0, 3, 6, 9]``: linspace is ``[0, 3, 6, 9]`` exactly, while ``count=3`` gives
``[0.0, 4.5, 9.0]`` -> ``[0, 4, 9]``.

Every failure to read a video (missing file, a file decord cannot open, no frames,
a broken frame) is raised as :class:`VideoError` with the path in the message; the
pipeline turns it into an error on that row and goes on with the others.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

DEFAULT_FRAMES = 32  # LLaVA-OneVision and the Qwen wrappers in lmms-eval


class VideoError(RuntimeError):
    """A video that cannot be read (missing, corrupt, empty)."""


def frame_indices(n_frames: int, count: int) -> list[int]:
    """``count`` uniform indices in ``[0, n_frames - 1]``, ``linspace`` rounded down.

    >>> frame_indices(10, 4)
    [0, 3, 6, 9]
    >>> frame_indices(10, 3)
    [0, 4, 9]
    >>> frame_indices(3, 5)   # fewer frames than asked: indices repeat
    [0, 0, 1, 1, 2]
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return np.floor(np.linspace(0, n_frames - 1, count)).astype(np.int64).tolist()


def even(count: int) -> int:
    """The frame count rounded up to an even number, for Qwen-VL models, which merge
    pairs of frames into one temporal patch (``even(31) == 32``, ``even(1) == 2``)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return count + count % 2


def hf_home() -> str:
    """The Hugging Face home, where lmms-eval unzips the video benchmarks: ``$HF_HOME``
    when set (read on each call, as lmms-eval reads it), else huggingface_hub's default
    (``~/.cache/huggingface``)."""
    from huggingface_hub import constants

    return str(Path(os.environ.get("HF_HOME") or constants.HF_HOME).expanduser())


def media_root_for(data: Optional[str]) -> str:
    """The folder a benchmark's media are looked for under when the user names none:
    a local data directory (or the folder of a data file) for a local copy, else
    :func:`hf_home` for a hub id. Which paths under it are tried is the task's
    (``pipeline/tasks/_media.py``)."""
    if data and Path(data).exists():
        path = Path(data).resolve()
        return str(path if path.is_dir() else path.parent)
    return hf_home()


def _open(path: str):
    import decord

    if not os.path.isfile(path):
        raise VideoError(f"video not found: {path}")
    try:
        reader = decord.VideoReader(path)
    except Exception as exc:  # decord raises RuntimeError / DECORDError with C++ logs
        raise VideoError(f"cannot open video {path}: {_first_line(exc)}") from exc
    if len(reader) < 1:
        raise VideoError(f"video has no frames: {path}")
    return reader


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def video_fps_and_length(path: str) -> tuple[float, int]:
    """``(frames per second, number of frames)`` of a video, as decord reports them."""
    reader = _open(path)
    return float(reader.get_avg_fps()), len(reader)


def frame_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of a video's frames, from its stream header (nothing decoded),
    so a request for frames too large to hold is refused before they are decoded."""
    import av

    if not os.path.isfile(path):
        raise VideoError(f"video not found: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"no video stream in {path}")
            context = container.streams.video[0].codec_context
            height, width = int(context.height), int(context.width)
    except VideoError:
        raise
    except Exception as exc:  # av raises InvalidDataError and others for damaged files
        raise VideoError(f"cannot open video {path}: {_first_line(exc)}") from exc
    if height < 1 or width < 1:
        raise VideoError(f"video has no frame size in its header: {path}")
    return height, width


def fit_pixels(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The largest ``(height, width)`` with the same aspect ratio and at most
    ``max_pixels`` pixels (unchanged when already within budget), e.g.
    ``fit_pixels(1080, 1920, 640 * 360) == (360, 640)``. Rounding to the patch
    multiples a model needs is left to the model's processor."""
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


@dataclass(frozen=True)
class Clip:
    """Sampled frames and where they sit in the source video.

    frames:   (count, H, W, 3) uint8 RGB.
    indices:  the source frame index of each, ``frame_indices(n_frames, count)``.
    fps:      the source's average frame rate (timestamp of frame i = i / fps).
    n_frames: the source's frame count.
    """

    frames: np.ndarray
    indices: list[int]
    fps: float
    n_frames: int


def read_clip(path: str, count: int = DEFAULT_FRAMES, *, max_pixels: Optional[int] = None) -> Clip:
    """``count`` uniformly sampled frames of the video at ``path``, with their indices
    and the video's fps and length (one open of the file).

    With ``max_pixels``, frames larger than that many pixels are resized (antialiased
    bilinear, aspect kept) after decoding; decord's own decode-time resize is not used
    because it is broken in decord 0.6 for some sizes (as is decoding itself for a few
    tiny widths such as 16, 24, 48 and 72 pixels: those raise too). Raises
    :class:`VideoError` when the video cannot be read.
    """
    reader = _open(path)
    indices = frame_indices(len(reader), count)
    try:
        batch = reader.get_batch(indices)
        frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        fps = float(reader.get_avg_fps())
    except Exception as exc:
        raise VideoError(f"cannot decode frames {indices[0]}..{indices[-1]} of {path}: {_first_line(exc)}") from exc
    if frames.ndim != 4 or frames.shape[0] != count or frames.shape[-1] != 3:
        raise VideoError(f"unexpected frame batch {frames.shape} from {path}")
    if max_pixels is not None:
        frames = _resize(frames, *fit_pixels(frames.shape[1], frames.shape[2], max_pixels))
    return Clip(np.ascontiguousarray(frames, dtype=np.uint8), indices, fps, len(reader))


def read_frames(path: str, count: int = DEFAULT_FRAMES, *, max_pixels: Optional[int] = None) -> np.ndarray:
    """``(count, H, W, 3)`` uint8 RGB: the frames of :func:`read_clip`."""
    return read_clip(path, count, max_pixels=max_pixels).frames


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, height, width, 3) uint8."""
    if frames.shape[1:3] == (height, width):
        return frames
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
