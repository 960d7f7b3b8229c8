"""Video benchmarks: exact prompts, video/subtitle lookup, parsing and scoring; and the
sample sets of ``python -m pipeline.samples`` read back by every task."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.samples import VIDEO_TASKS, WRITERS, video_frames, write_srt, write_task, write_video
from pipeline.tasks import get_task, list_tasks
from pipeline.tasks.videomme import read_srt, subtitles_at_frames
from pipeline.video import VideoError, read_frames

ALL_TASKS = ("egoschema", "nextqa", "videomme", "videomme_subtitles", "egoplan", "mme", "pope", "gqa", "mmbench",
             "scienceqa_img", "textvqa", "ocrbench", "seedbench", "okvqa", "synthetic_fine")


def results_of(task, samples, outputs):
    results = []
    for s, out in zip(samples, outputs):
        parsed = None if s.error else task.parse(out, s)
        results.append({"parsed": parsed, "score": None if s.error else task.score(parsed, s), "answer": s.answer,
                        "meta": s.meta, "error": s.error})
    return results


def put_video(root, relative, n_frames=24):
    """A real 3 s (8 fps) mp4 at ``root/relative``."""
    return str(write_video(root / relative, video_frames("red", "right", n_frames)))


# ---------------------------------------------------------------- exact prompts


def test_egoschema_prompt_video_and_scoring(tmp_path):
    task = get_task("egoschema")
    put_video(tmp_path, "egoschema/videos/v1.MP4")
    row = {"question_idx": "q1", "question": "What is C doing in the kitchen?", "video_idx": "v1",
           "option": ["A. cooking", "B. reading", "C. running", "D. sleeping", "E. washing up"], "answer": "0"}
    sample = task.sample(row, media_root=str(tmp_path))
    assert sample.prompt == (
        "What is C doing in the kitchen?\nA. cooking\nB. reading\nC. running\nD. sleeping\nE. washing up\n"
        "Answer with the option's letter from the given choices directly.")
    assert (sample.id, sample.answer, sample.error, sample.max_new_tokens) == ("q1", "A", None, 16)
    assert sample.video == str(tmp_path / "egoschema/videos/v1.MP4")
    # options without their letter get one; an int answer works too
    bare = task.sample({**row, "option": ["x", "y", "z", "u", "v"], "answer": 3}, media_root=str(tmp_path))
    assert bare.prompt.split("\n")[1:6] == ["A. x", "B. y", "C. z", "D. u", "E. v"] and bare.answer == "D"

    outputs = ["A", "The answer is (B).", "washing up", "I cannot tell", "A."]
    parsed = [task.parse(o, sample) for o in outputs]
    assert parsed == ["A", "B", "E", None, "A"]
    assert [task.score(p, sample) for p in parsed] == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_nextqa_prompt_has_no_instruction_and_scores_by_type(tmp_path):
    task = get_task("nextqa")
    put_video(tmp_path, "nextqa/NExTVideo/4010069381.mp4")
    row = {"video": 4010069381, "question": "why did the boy pick up the ball", "a0": "to throw it",
           "a1": "to clean it ", "a2": "give to dog", "a3": "to sit on it", "a4": "put it away", "answer": 2,
           "qid": 7, "type": "CW", "_index": 0}
    sample = task.sample(row, media_root=str(tmp_path))
    assert sample.prompt == ("why did the boy pick up the ball\nA. to throw it\nB. to clean it\nC. give to dog\n"
                             "D. to sit on it\nE. put it away")
    assert (sample.id, sample.answer, sample.error) == ("4010069381_7", "C", None)
    assert sample.meta["type"] == "CW" and sample.meta["family"] == "causal"

    other = task.sample({**row, "qid": 8, "type": "TN", "answer": 0}, media_root=str(tmp_path))
    missing = task.sample({**row, "video": 1, "qid": 9, "type": "DO"}, media_root=str(tmp_path))
    metrics = task.aggregate(results_of(task, [sample, other, missing], ["C", "B", "C"]))
    assert metrics["score"] == pytest.approx(100 / 3)
    assert (metrics["CW"], metrics["TN"], metrics["DO"]) == (100.0, 0.0, 0.0)
    assert (metrics["causal"], metrics["temporal"], metrics["descriptive"]) == (100.0, 0.0, 0.0)
    assert (metrics["n"], metrics["errors"]) == (3.0, 1.0)


VIDEOMME_ROW = {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
                "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Counting Problem",
                "question": "When demonstrating the Germany modern Christmas tree is initially decorated with apples, "
                            "candles and berries, which kind of the decoration has the largest number?",
                "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
                "answer": "C"}
VIDEOMME_QUESTION = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n"
    "When demonstrating the Germany modern Christmas tree is initially decorated with apples, candles and berries, "
    "which kind of the decoration has the largest number?\n"
    "A. Apples.\nB. Candles.\nC. Berries.\nD. The three kinds are of the same number.\n")


def test_videomme_prompt_extensions_and_duration_scores(tmp_path):
    task = get_task("videomme")
    put_video(tmp_path, "videomme/data/fFjv93ACGo8.mkv")
    sample = task.sample(VIDEOMME_ROW, media_root=str(tmp_path))
    assert sample.prompt == VIDEOMME_QUESTION + "Answer with the option's letter from the given choices directly."
    assert (sample.id, sample.answer, sample.error) == ("001-1", "C", None)
    assert sample.video == str(tmp_path / "videomme/data/fFjv93ACGo8.mkv")
    assert task.parse("The best answer is C", sample) == "C" and task.parse("Berries", sample) == "C"

    rows = [dict(VIDEOMME_ROW, question_id=f"q{i}", duration=d) for i, d in enumerate(["short", "medium", "long", "long"])]
    samples = [task.sample(r, media_root=str(tmp_path)) for r in rows]
    metrics = task.aggregate(results_of(task, samples, ["C", "(C)", "C. Berries", "A"]))
    assert metrics["score"] == 75.0
    assert (metrics["short"], metrics["medium"], metrics["long"]) == (100.0, 100.0, 50.0)


def test_videomme_subtitles_keep_the_lines_at_sampled_frames(tmp_path):
    task = get_task("videomme_subtitles")
    put_video(tmp_path, "videomme/data/fFjv93ACGo8.mp4", n_frames=24)  # 3 s at 8 fps
    write_srt(tmp_path / "videomme/subtitle/fFjv93ACGo8.srt",
              [(0.0, 1.0, "first line"), (1.0, 2.0, "second line"), (2.9, 3.0, "last line")])
    # 2 frames -> [0, 23]: "second line" (frames 8..15) is not on screen at either
    sample = task.sample(VIDEOMME_ROW, media_root=str(tmp_path), num_frames=2)
    assert sample.prompt == ("This video's subtitles are listed below:\nfirst line\nlast line\n"
                             + VIDEOMME_QUESTION + "The best answer is:")
    assert sample.error is None and sample.meta["num_frames"] == 2
    # 4 frames -> [0, 7, 15, 23]: all three
    four = task.sample(VIDEOMME_ROW, media_root=str(tmp_path), num_frames=4)
    assert four.prompt.startswith("This video's subtitles are listed below:\nfirst line\nsecond line\nlast line\nSelect")

    no_srt = task.sample({**VIDEOMME_ROW, "videoID": "other"}, media_root=str(tmp_path))
    assert no_srt.prompt.startswith("This video's subtitles are listed below:\nNo subtitles available\nSelect")
    assert no_srt.error.startswith("missing video: ")


def test_videomme_subtitles_tolerate_a_broken_video(tmp_path):
    task = get_task("videomme_subtitles")
    (tmp_path / "videomme/data").mkdir(parents=True)
    (tmp_path / "videomme/data/fFjv93ACGo8.mp4").write_bytes(b"not a video")
    write_srt(tmp_path / "videomme/subtitle/fFjv93ACGo8.srt", [(0.0, 1.0, "first line")])
    sample = task.sample(VIDEOMME_ROW, media_root=str(tmp_path))
    assert "cannot open video" in sample.error and sample.prompt.endswith("The best answer is:")


def test_srt_parsing_and_frame_overlap(tmp_path):
    path = tmp_path / "a.srt"
    path.write_text('1\n00:00:00,500 --> 00:00:01,250\n<font color="white" size=".72c">Hello</font>\n\n'
                    "2\n00:01:02.000 --> 00:01:03.000\ntwo\nlines\n\n3\nno timing here\n", encoding="utf-8")
    assert read_srt(str(path)) == [(0.5, 1.25, "Hello"), (62.0, 63.0, "two lines")]
    cues = [(0.0, 1.0, "a"), (1.0, 2.0, "b"), (2.5, 2.9, "c")]
    assert subtitles_at_frames(cues, 10.0, 30, 3) == ["a", "b"]  # frames 0, 14, 29
    assert subtitles_at_frames(cues, 10.0, 30, 30) == ["a", "b", "c"]


def test_egoplan_goal_sentence_rule_and_prompt(tmp_path):
    task = get_task("egoplan")
    put_video(tmp_path, "egoplan/1234.mp4")
    row = {"sample_id": 1234, "video_id": "v", "task_goal": "make tomato and egg stir-fry",
           "question": "unused", "choice_a": "wash tomato", "choice_b": "crack egg", "choice_c": "stir food",
           "choice_d": "put down knife", "golden_choice_idx": "B"}
    sample = task.sample(row, media_root=str(tmp_path))
    assert sample.prompt == (
        "My current task is to make tomato and egg stir-fry. The task's progress is demonstrated in the provided "
        "video. My current field of view is shown in the provided image. What should be my next action?\n"
        "A. wash tomato\nB. crack egg\nC. stir food\nD. put down knife\n"
        "Answer with the option's letter from the given choices")
    assert (sample.id, sample.answer, sample.error, sample.images) == ("1234", "B", None, [])
    ing = task.sample({**row, "task_goal": "cooking a tomato and egg stir-fry"}, media_root=str(tmp_path))
    assert ing.prompt.startswith("I am tasked with cooking a tomato and egg stir-fry. The task's progress")
    assert [task.parse(o, sample) for o in ["B", "crack egg", "E", ""]] == ["B", "B", None, None]
    results = results_of(task, [sample, ing], ["B", "A"])
    assert task.aggregate(results)["score"] == 50.0


def test_missing_video_is_a_sample_error_naming_the_paths_tried(tmp_path, monkeypatch):
    """Spec layout, hub repository download, lmms-eval's $HF_HOME: in that order, each
    with the benchmark's extensions (the snapshot of what a user is told)."""
    d, hf = tmp_path / "data", tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf))
    rows = {
        "egoschema": ({"question_idx": "q", "question": "?", "video_idx": "gone", "option": list("abcde"), "answer": 1},
                      f"{d}/egoschema/videos/gone.{{mp4,MP4}}, {d}/videos/gone.{{mp4,MP4}}, "
                      f"{hf}/egoschema/videos/gone.{{mp4,MP4}}"),
        "nextqa": ({"video": 5, "question": "?", **{f"a{i}": str(i) for i in range(5)}, "answer": 1, "type": "CW"},
                   f"{d}/nextqa/NExTVideo/5.{{mp4,MP4}}, {d}/NExTVideo/5.{{mp4,MP4}}, "
                   f"{hf}/nextqa/NExTVideo/5.{{mp4,MP4}}"),
        "videomme": (VIDEOMME_ROW, f"{d}/videomme/data/fFjv93ACGo8.{{mp4,MP4,mkv}}, "
                                   f"{d}/data/fFjv93ACGo8.{{mp4,MP4,mkv}}, {hf}/videomme/data/fFjv93ACGo8.{{mp4,MP4,mkv}}"),
        "egoplan": ({"sample_id": 9, "task_goal": "g", **{f"choice_{c}": c for c in "abcd"}, "golden_choice_idx": "A"},
                    f"{d}/egoplan/9.{{mp4,MP4,mkv}}, {d}/9.{{mp4,MP4,mkv}}, {hf}/egoplan/9.{{mp4,MP4,mkv}}"),
    }
    rows["videomme_subtitles"] = rows["videomme"]
    for name, (row, tried) in rows.items():
        sample = get_task(name).sample(row, media_root=str(d))
        assert sample.error == f"missing video: tried {tried}", name
        assert sample.video == tried.split(".{")[0] + ".mp4"  # the first candidate


# ---------------------------------------------------------------- sample sets


@pytest.fixture(scope="module")
def cli_samples(tmp_path_factory):
    """All tasks written once through the command line, 3 rows each."""
    out = tmp_path_factory.mktemp("samples")
    proc = subprocess.run([sys.executable, "-m", "pipeline.samples", "--out", str(out), "--per-task", "3",
                           "--frames-per-video", "16"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_samples_cover_every_registered_task():
    assert set(WRITERS) == set(ALL_TASKS)
    assert set(list_tasks()) <= set(WRITERS), "a task without a sample writer"


def test_samples_help():
    proc = subprocess.run([sys.executable, "-m", "pipeline.samples", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--per-task" in proc.stdout and "--corrupt" in proc.stdout


@pytest.mark.parametrize("name", ALL_TASKS)
def test_cli_samples_read_back_without_errors(cli_samples, name):
    if name not in list_tasks():
        pytest.skip(f"task module for {name} not written yet")
    out, stdout = cli_samples
    assert f"{name}: 3 rows -> {out / name}" in stdout
    task = get_task(name)
    samples = [task.sample(row) for row in task.rows(str(out / name))]
    assert len(samples) == 3 and len({s.id for s in samples}) == 3
    assert [s.error for s in samples] == [None] * 3
    assert all(s.prompt and s.answer not in (None, "", []) for s in samples)
    if task.modality == "video":
        assert all(s.video.startswith(str(out / name)) and not s.images for s in samples)
        frames = read_frames(samples[0].video, 4)
        assert frames.shape == (4, 64, 96, 3) and len({f.tobytes() for f in frames}) == 4  # frames differ
    else:
        assert all(s.images and s.video is None for s in samples)


def test_sample_answers_can_be_read_off_the_video(tmp_path):
    """The square's colour in the middle frame is the gold option of the colour question."""
    from pipeline.samples import COLOURS

    task = get_task("egoschema")
    [sample] = [task.sample(r) for r in task.rows(str(write_task("egoschema", tmp_path, 1)))]
    middle = read_frames(sample.video, 3)[1].reshape(-1, 3).astype(int)
    gold = sample.meta["options"]["ABCDE".index(sample.answer)]
    counts = {name: int((np.abs(middle - rgb).sum(axis=1) < 60).sum()) for name, rgb in COLOURS.items()}
    assert max(counts, key=counts.get) == gold


def test_samples_are_deterministic(tmp_path):
    a = write_task("videomme", tmp_path / "a", 2)
    b = write_task("videomme", tmp_path / "b", 2)
    task = get_task("videomme")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]  # noqa: E731
    assert strip(task.rows(str(a))) == strip(task.rows(str(b)))


@pytest.mark.parametrize("name", VIDEO_TASKS)
def test_corrupt_sample_sets_give_error_rows(tmp_path, name):
    task = get_task(name)
    samples = [task.sample(row, num_frames=4) for row in task.rows(str(write_task(name, tmp_path, 2, corrupt=True)))]
    assert len(samples) == 4
    assert [s.error for s in samples[:2]] == [None, None]
    assert samples[3].error.startswith(f"missing video: tried {samples[3].video.rsplit('.', 1)[0]}.")
    if name == "videomme_subtitles":  # it reads the video's length in sample() already
        assert "cannot open video" in samples[2].error
    else:
        assert samples[2].error is None
        with pytest.raises(VideoError, match="cannot open video"):
            read_frames(samples[2].video, 4)


@pytest.mark.parametrize("name", [n for n in ALL_TASKS if n not in VIDEO_TASKS])
def test_corrupt_image_sample_sets_give_error_rows(tmp_path, name):
    if name not in list_tasks():
        pytest.skip(f"task module for {name} not written yet")
    task = get_task(name)
    samples = [task.sample(row) for row in task.rows(str(write_task(name, tmp_path, 2, corrupt=True)))]
    assert len(samples) == 4
    assert [bool(s.error) for s in samples] == [False, False, True, True]
