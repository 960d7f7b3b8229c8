"""Prompts and generation settings against the installed lmms-eval: for every benchmark,
our prompt for each corpus row is the text its ``doc_to_text`` (the function the task
yaml names, with the default kwargs) builds, and our max new tokens and stop strings are
the yaml's generation kwargs. An lmms-eval release that changes any of it fails here."""

from __future__ import annotations

import re

import pytest

from pipeline.infer import WRAPPER_MAX_NEW_TOKENS
from pipeline.tasks import get_task
from pipeline.tasks.scoring import LMMS_EVAL_VERSION
from tests.conformance import lmms
from tests.conformance.conftest import ROWS, our_row


def test_the_installed_lmms_eval_is_the_release_we_follow():
    assert lmms.version() == LMMS_EVAL_VERSION


def _their_prompt(task: str, doc: dict, hf_home=None) -> str:
    doc_to_text = lmms.function(task, "doc_to_text", hf_home)
    kwargs = lmms.prompt_kwargs(lmms.task_config(task))
    return doc_to_text(dict(doc)) if kwargs is None else doc_to_text(dict(doc), kwargs)


@pytest.mark.parametrize("task", [t for t in lmms.TASKS if t != "videomme_subtitles"])
def test_prompts_are_lmms_evals(task, media):
    ours = get_task(task)
    for i, row in enumerate(ROWS[task]):
        sample = ours.sample(our_row(task, row, i), media_root=media)
        assert sample.prompt == _their_prompt(task, row), (task, i)


def test_videomme_subtitle_prompts_are_lmms_evals(media, lmms_videomme):
    """Real videos (fps and frame count through cv2 on their side), subtitles with many
    cues (lmms-eval's set order of them), two font spans in one cue, a cue without one,
    repeated times, CRLF line ends, and a video without subtitles."""
    ours = get_task("videomme_subtitles")
    kwargs = lmms.prompt_kwargs(lmms.task_config("videomme_subtitles"))
    prompts = []
    for i, row in enumerate(ROWS["videomme_subtitles"]):
        sample = ours.sample(our_row("videomme_subtitles", row, i), media_root=media)
        assert sample.error is None
        assert sample.prompt == lmms_videomme.videomme_doc_to_text_subtitle(dict(row), kwargs), i
        prompts.append(sample.prompt)
    listed = [int(line.split()[1]) for line in prompts[2].split("\n") if line.startswith("cue ")]
    assert len(listed) > 20 and listed != sorted(listed)  # the set order, not time order
    assert "\nfirst\n" in prompts[0] and "no font tag" not in prompts[0]
    assert prompts[3].startswith("This video's subtitles are listed below: \nNo subtitles available\n")


@pytest.mark.parametrize("task", list(lmms.TASKS))
def test_generation_settings_are_lmms_evals(task, media):
    max_new_tokens, until = lmms.generation(lmms.task_config(task))
    ours = get_task(task)
    assert (ours.max_new_tokens, tuple(ours.until)) == (max_new_tokens, until)
    sample = ours.sample(our_row(task, ROWS[task][0], 0), media_root=media)
    assert (sample.max_new_tokens, tuple(sample.until)) == (max_new_tokens, until)


# Where a task names no max_new_tokens, the budget is the model wrapper's own default.
WRAPPERS = {"qwen2_vl": "simple/qwen2_vl.py", "qwen2_5_vl": "chat/qwen2_5_vl.py", "qwen3_vl": "simple/qwen3_vl.py",
            "llava": "chat/llava_hf.py", "llava_onevision": "simple/llava_onevision.py"}


@pytest.mark.parametrize("family", sorted(WRAPPERS))
def test_model_default_budgets_are_lmms_evals_wrappers(family):
    source = (lmms.root() / "models" / WRAPPERS[family]).read_text()
    default = re.search(r'"max_new_tokens"\]?\s*[:=]\s*(\d+)', source)
    assert default and int(default.group(1)) == WRAPPER_MAX_NEW_TOKENS[family]


@pytest.mark.parametrize("ext, fps, frames", [(".mp4", 8, 320), (".MP4", 25, 50), (".mkv", 30, 97), (".mkv", 8, 321)])
def test_video_fps_and_frame_count_are_what_lmms_eval_reads(tmp_path, ext, fps, frames):
    """Video-MME's subtitles are chosen by the video's fps and frame count: lmms-eval reads
    them with OpenCV, we with decord (no nb_frames in Matroska: both estimate)."""
    import cv2

    from pipeline.samples import video_frames, write_video
    from pipeline.video import video_fps_and_length

    path = str(write_video(tmp_path / f"clip{ext}", video_frames("blue", "left", frames), fps=fps))
    capture = cv2.VideoCapture(path)
    assert video_fps_and_length(path) == (capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
