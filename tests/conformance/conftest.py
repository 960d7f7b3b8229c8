"""Shared by the conformance tests: the corpus as rows our tasks read, and a media folder
with real videos and subtitle files in the layout both lmms-eval ($HF_HOME) and our spec
layout use (``videomme/data/<id>.mp4``, ``videomme/subtitle/<id>.srt``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.samples import VIDEO_FPS, video_frames, write_video
from tests.conformance import corpus, lmms

ROWS = {
    "mme": corpus.MME_ROWS, "pope": corpus.POPE_ROWS, "gqa": corpus.GQA_ROWS, "mmbench": corpus.MMBENCH_ROWS,
    "scienceqa_img": corpus.SCIENCEQA_ROWS, "textvqa": corpus.TEXTVQA_ROWS, "okvqa": corpus.OKVQA_ROWS,
    "ocrbench": corpus.OCRBENCH_ROWS, "seedbench": corpus.SEEDBENCH_ROWS, "egoschema": corpus.EGOSCHEMA_ROWS,
    "nextqa": corpus.NEXTQA_ROWS, "videomme": corpus.VIDEOMME_ROWS, "videomme_subtitles": corpus.VIDEOMME_ROWS,
    "egoplan": corpus.EGOPLAN_ROWS,
}
assert set(ROWS) == set(lmms.TASKS)
_PICTURE = Image.new("RGB", (8, 8), (200, 30, 30))


def our_row(task: str, row: dict, index: int) -> dict:
    """``row`` as our ``Task.rows`` yields it: with its position and an image cell."""
    image = [_PICTURE] if task == "seedbench" else _PICTURE
    return {**row, "_index": index, "image": image}


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_raw_srt(path: Path, cues, newline: str = "\n") -> None:
    blocks = [f"{i}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\n".join(blocks).replace("\n", newline).encode("utf-8"))


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> str:
    """The media root: every Video-MME row's video (40 s at 8 fps), subtitles for two of
    them (one file with CRLF line ends), the third without."""
    root = tmp_path_factory.mktemp("lmms_media")
    frames = video_frames("red", "right", corpus.VIDEO_SECONDS * VIDEO_FPS)
    for row in corpus.VIDEOMME_ROWS:
        write_video(root / "videomme" / "data" / f"{row['videoID']}.mp4", frames)
    for i, (video_id, cues) in enumerate(corpus.VIDEOMME_SUBTITLES.items()):
        write_raw_srt(root / "videomme" / "subtitle" / f"{video_id}.srt", cues, "\r\n" if i % 2 else "\n")
    return str(root)


@pytest.fixture
def lmms_videomme(media, monkeypatch):
    """lmms-eval's Video-MME utils, reading videos and subtitles from ``media``."""
    module = lmms.utils("videomme")
    monkeypatch.setattr(module, "base_cache_dir", media)
    return module


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """lmms-eval's aggregations write result files into the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
