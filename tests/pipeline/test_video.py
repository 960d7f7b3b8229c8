"""Frame sampling and decoding (pipeline/video.py) on real video files the tests encode."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.samples import write_video
from pipeline.video import (VideoError, even, fit_pixels, frame_indices, read_clip, read_frames,
                            video_fps_and_length)


def ramp(n_frames: int, height: int = 32, width: int = 64) -> np.ndarray:
    """Flat grey frames whose level is 10 * t, so a decoded frame tells its index.
    (decord 0.6 cannot decode some tiny widths, e.g. 16, 24, 48, 72: keep 64.)"""
    return np.repeat(np.arange(n_frames, dtype=np.uint8)[:, None, None, None] * 10, height * width * 3).reshape(
        n_frames, height, width, 3)


@pytest.fixture(scope="module")
def ramp_mp4(tmp_path_factory):
    return str(write_video(tmp_path_factory.mktemp("video") / "ramp.mp4", ramp(20), fps=8))


def test_frame_indices_are_linspace_rounded_down():
    assert frame_indices(10, 4) == [0, 3, 6, 9]
    assert frame_indices(10, 3) == [0, 4, 9]  # 4.5 -> 4
    assert frame_indices(100, 1) == [0]
    assert frame_indices(3, 5) == [0, 0, 1, 1, 2]  # fewer frames than asked: repeats
    assert frame_indices(1, 3) == [0, 0, 0]
    assert frame_indices(5400, 32)[:4] == [0, 174, 348, 522] and frame_indices(5400, 32)[-1] == 5399


def test_frame_indices_match_lmms_eval_formula():
    for n in (1, 2, 7, 10, 31, 64, 1000, 5401):
        for count in (1, 2, 8, 16, 32, 33):
            assert frame_indices(n, count) == np.linspace(0, n - 1, count, dtype=int).tolist()


def test_frame_indices_reject_empty():
    with pytest.raises(ValueError):
        frame_indices(0, 4)
    with pytest.raises(ValueError):
        frame_indices(10, 0)


def test_even_rounds_up_for_qwen():
    assert [even(c) for c in (1, 2, 31, 32)] == [2, 2, 32, 32]


def test_fit_pixels_keeps_aspect_within_budget():
    assert fit_pixels(1080, 1920, 640 * 360) == (360, 640)
    assert fit_pixels(64, 96, 10_000) == (64, 96)  # already small: unchanged
    h, w = fit_pixels(480, 640, 100_000)
    assert h * w <= 100_000 and abs(w / h - 640 / 480) < 0.01


def test_read_frames_shape_dtype_and_the_right_frames(ramp_mp4):
    frames = read_frames(ramp_mp4, 4)
    assert frames.shape == (4, 32, 64, 3) and frames.dtype == np.uint8
    # indices [0, 6, 12, 19] -> grey levels 0, 60, 120, 190 (lossy codec: a few levels off)
    levels = frames.reshape(4, -1).mean(axis=1)
    assert np.allclose(levels, [0, 60, 120, 190], atol=6), levels
    assert read_frames(ramp_mp4, 32).shape[0] == 32  # more than the video has: repeated frames


def test_read_frames_max_pixels_resizes_keeping_aspect(ramp_mp4):
    frames = read_frames(ramp_mp4, 2, max_pixels=32 * 16)
    assert frames.shape == (2, 16, 32, 3) and frames.dtype == np.uint8
    assert abs(float(frames[1].mean()) - 190) < 8  # content survives the resize
    assert read_frames(ramp_mp4, 2, max_pixels=10**6).shape == (2, 32, 64, 3)


def test_fps_and_length(ramp_mp4):
    fps, n_frames = video_fps_and_length(ramp_mp4)
    assert n_frames == 20 and fps == pytest.approx(8.0)


def test_read_clip_gives_frames_with_their_indices(ramp_mp4):
    clip = read_clip(ramp_mp4, 4, max_pixels=32 * 16)
    assert clip.indices == [0, 6, 12, 19] and (clip.n_frames, clip.fps) == (20, pytest.approx(8.0))
    assert clip.frames.shape == (4, 16, 32, 3)


def test_mkv_reads_too(tmp_path):
    path = str(write_video(tmp_path / "clip.mkv", ramp(6)))
    assert read_frames(path, 3).shape == (3, 32, 64, 3)


def test_missing_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="video not found: .*nope.mp4"):
        read_frames(missing)
    with pytest.raises(VideoError, match="video not found"):
        video_fps_and_length(missing)


@pytest.mark.parametrize("content", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_a_clear_error(tmp_path, ramp_mp4, content):
    data = {"garbage": b"\x00\x01not a video" * 50, "truncated": open(ramp_mp4, "rb").read()[:400], "empty": b""}
    path = tmp_path / f"{content}.mp4"
    path.write_bytes(data[content])
    with pytest.raises(VideoError, match=f"cannot open video .*{content}.mp4"):
        read_frames(str(path), 4)
