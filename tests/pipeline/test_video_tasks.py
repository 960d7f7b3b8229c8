"""Video benchmarks: exact prompts (lmms-eval 0.7.3's, snapshot), video/subtitle lookup,
generation settings, parsing and scoring (lmms-eval's, and the lenient one); and the
sample sets of ``python -m pipeline.samples`` read back by every task. tests/conformance
runs the same against the lmms-eval package itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.samples import VIDEO_TASKS, WRITERS, video_frames, write_srt, write_task, write_video
from pipeline.tasks import get_task, list_tasks
from pipeline.tasks.scoring import read, task_metrics
from pipeline.tasks.videomme import read_srt, subtitles_at_frames
from pipeline.video import VideoError, read_frames

ALL_TASKS = ("egoschema", "nextqa", "videomme", "videomme_subtitles", "egoplan", "mme", "pope", "gqa", "mmbench",
             "scienceqa_img", "textvqa", "ocrbench", "seedbench", "okvqa", "synthetic_fine")


def results_of(task, samples, outputs, lenient=False):
    results = []
    for s, out in zip(samples, outputs):
        parsed, score = (None, None) if s.error else read(task, out, s, lenient=lenient)
        results.append({"parsed": parsed, "score": score, "answer": s.answer, "meta": s.meta, "error": s.error})
    return results


def metrics_of(task, samples, outputs, lenient=False):
    return task_metrics(task, results_of(task, samples, outputs, lenient))


def put_video(root, relative, n_frames=24):
    """A real 3 s (8 fps) mp4 at ``root/relative``."""
    return str(write_video(root / relative, video_frames("red", "right", n_frames)))


# ---------------------------------------------------------------- exact prompts


def test_egoschema_prompt_video_and_scoring(tmp_path):
    task = get_task("egoschema")
    put_video(tmp_path, "egoschema/videos/v1.MP4")
    row = {"question_idx": "q1", "question": "What is C doing in the kitchen?", "video_idx": "v1",
           "option": ["A. C is cooking", "B. C is reading", "C. C runs", "D. C sleeps", "E. C washes up"],
           "answer": "0"}
    sample = task.sample(row, media_root=str(tmp_path))
    assert sample.prompt == (
        "What is C doing in the kitchen?\nA. C is cooking\nB. C is reading\nC. C runs\nD. C sleeps\n"
        "E. C washes up\nAnswer with the option's letter from the given choices directly.")
    assert (sample.id, sample.answer, sample.error, sample.max_new_tokens, sample.until) == (
        "q1", "0", None, 16, ("\n\n",))
    assert sample.video == str(tmp_path / "egoschema/videos/v1.MP4")
    # options are printed as the dataset has them (lmms-eval adds no letters); an int answer works too
    bare = task.sample({**row, "option": ["x", "y", "z", "u", "v"], "answer": 3}, media_root=str(tmp_path))
    assert bare.prompt.split("\n")[1:6] == ["x", "y", "z", "u", "v"] and bare.answer == "3"

    # lmms-eval's MMMU extractor: "C is ..." reads as C (the option text starts with the letter);
    # the earliest of several candidates wins; nothing found is its random pick: unparsed here
    outputs = ["A", "The answer is (B).", "C is running", "I cannot tell", "A.", "B or A", "(D) or (A)"]
    parsed = [task.parse(o, sample) for o in outputs]
    assert parsed == ["A", "B", "C", None, "A", "B", "D"]
    assert [task.score(p, sample) for p in parsed] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    metrics = metrics_of(task, [sample] * len(outputs), outputs)
    assert metrics["score"] == pytest.approx(200 / 7) and metrics["unparsed"] == 1.0
    lenient = [task.parse_lenient(o, sample) for o in outputs]
    assert lenient == ["A", "B", None, None, "A", None, "D"]


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
    assert (sample.max_new_tokens, sample.until) == (None, ("\n\n",))  # the model's default budget
    assert sample.meta["type"] == "CW" and sample.meta["family"] == "causal"
    # lmms-eval's NExTQA extractor: "(X)" first, the last of several wins; no option: its random pick
    outputs = ["C", "(B) or (C)", "B or C", "C. give to dog", "he wanted to give to dog, I think so", "no idea"]
    assert [task.parse(o, sample) for o in outputs] == ["C", "C", "C", "C", "C", None]

    other = task.sample({**row, "qid": 8, "type": "TN", "answer": 0}, media_root=str(tmp_path))
    missing = task.sample({**row, "video": 1, "qid": 9, "type": "DO"}, media_root=str(tmp_path))
    metrics = metrics_of(task, [sample, other, missing], ["C", "B", "C"])
    assert metrics["score"] == pytest.approx(100 / 3) and metrics["unparsed"] == 0.0
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


def font(text):
    return f'<font color="white" size=".72c">{text}</font>'


def test_videomme_prompt_extensions_and_duration_scores(tmp_path):
    task = get_task("videomme")
    put_video(tmp_path, "videomme/data/fFjv93ACGo8.mkv")
    sample = task.sample(VIDEOMME_ROW, media_root=str(tmp_path))
    assert sample.prompt == VIDEOMME_QUESTION + "\nAnswer with the option's letter from the given choices directly."
    assert (sample.id, sample.answer, sample.error, sample.max_new_tokens, sample.until) == (
        "001-1", "C", None, 16, ("\n\n",))
    assert sample.video == str(tmp_path / "videomme/data/fFjv93ACGo8.mkv")
    # lmms-eval's extract_mcq_answer: "The best answer is C", "C" at the start; the option's text is not read
    assert task.parse("The best answer is C", sample) == "C" and task.parse("Berries", sample) == "B"
    assert task.parse("Candles. No: (C)", sample) == "C" and task.parse("hmm", sample) == ""
    assert task.parse_lenient("Berries", sample) == "C"

    rows = [dict(VIDEOMME_ROW, question_id=f"q{i}", duration=d, task_type=t)
            for i, (d, t) in enumerate([("short", "Counting Problem"), ("medium", "Counting Problem"),
                                        ("long", "OCR Problems"), ("long", "OCR Problems")])]
    samples = [task.sample(r, media_root=str(tmp_path)) for r in rows]
    metrics = metrics_of(task, samples, ["C", "(C)", "C. Berries", "A"])
    assert metrics["score"] == 75.0 and metrics["unparsed"] == 0.0
    assert (metrics["duration/short"], metrics["duration/medium"], metrics["duration/long"]) == (100.0, 100.0, 50.0)
    assert (metrics["task_type/Counting Problem"], metrics["task_type/OCR Problems"]) == (100.0, 50.0)
    assert metrics["domain/Knowledge"] == metrics["sub_category/Humanity & History"] == 75.0


def test_videomme_subtitles_follow_lmms_evals_32_frames_and_font_spans(tmp_path):
    task = get_task("videomme_subtitles")
    put_video(tmp_path, "videomme/data/fFjv93ACGo8.mp4", n_frames=240)  # 30 s at 8 fps
    write_srt(tmp_path / "videomme/subtitle/fFjv93ACGo8.srt",
              [(0.0, 1.0, "first line"), (10.0, 10.1, "too short"), (20.0, 22.0, "last line")])
    # 32 frames of 240 (every 7.7 frames): "too short" (frames 80..80) is on screen at none
    sample = task.sample(VIDEOMME_ROW, media_root=str(tmp_path))
    assert sample.prompt == ("This video's subtitles are listed below: \nfirst line\nlast line\n"
                             + VIDEOMME_QUESTION + "The best answer is:")
    assert sample.error is None
    # only the first <font> span of a cue counts, and a cue without one is left out
    (tmp_path / "videomme/subtitle/fFjv93ACGo8.srt").write_text(
        f"1\n00:00:00,000 --> 00:00:01,000\n{font('one')} {font('two')}\n\n"
        "2\n00:00:20,000 --> 00:00:22,000\nplain text\n", encoding="utf-8")
    assert task.sample(VIDEOMME_ROW, media_root=str(tmp_path)).prompt.startswith(
        "This video's subtitles are listed below: \none\nSelect")

    no_srt = task.sample({**VIDEOMME_ROW, "videoID": "other"}, media_root=str(tmp_path))
    assert no_srt.prompt.startswith("This video's subtitles are listed below: \nNo subtitles available\nSelect")
    assert no_srt.error.startswith("missing video: ")


def test_videomme_subtitles_tolerate_a_broken_video(tmp_path):
    task = get_task("videomme_subtitles")
    (tmp_path / "videomme/data").mkdir(parents=True)
    (tmp_path / "videomme/data/fFjv93ACGo8.mp4").write_bytes(b"not a video")
    write_srt(tmp_path / "videomme/subtitle/fFjv93ACGo8.srt", [(0.0, 1.0, "first line")])
    sample = task.sample(VIDEOMME_ROW, media_root=str(tmp_path))
    assert "cannot open video" in sample.error and sample.prompt.endswith("The best answer is:")
    (tmp_path / "videomme/subtitle/fFjv93ACGo8.srt").write_text("1\n00:00:00.500 --> 00:00:01,000\nhi\n")
    put_video(tmp_path, "videomme/data/fFjv93ACGo8.mp4")
    assert "cannot place subtitles" in task.sample(VIDEOMME_ROW, media_root=str(tmp_path)).error  # "." for ","


def test_srt_parsing_and_frame_overlap(tmp_path):
    path = tmp_path / "a.srt"
    path.write_text(f"1\n00:00:00,500 --> 00:00:01,250\n{font('Hello')}\n\n"
                    "2\n00:01:02,000 --> 00:01:03,5\ntwo\nlines\n\n3\nno timing here\n\n"
                    "4\n00:00:00,500 --> 00:00:01,250\nsame times: replaces cue 1\n", encoding="utf-8")
    # the last block keeps the file's final newline as a trailing space, as lmms-eval's reader does
    assert read_srt(str(path)) == [(0.5, 1.25, "same times: replaces cue 1 "), (62.0, 63.005, "two lines")]
    cues = [(0.0, 1.0, font("a")), (1.0, 2.0, font("b")), (2.5, 2.9, font("c"))]
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
        "video. My current field of view is shown in the provided image. What should be my next action? Please "
        "output the most reasonable action you think, expressed in a short phrase.\n"
        "A. wash tomato\nB. crack egg\nC. stir food\nD. put down knife\n"
        "Answer with the option's letter from the given choices")
    assert (sample.id, sample.answer, sample.error, sample.images) == ("1234", "B", None, [])
    assert (sample.max_new_tokens, sample.until) == (4096, ("\n\n",))
    ing = task.sample({**row, "task_goal": "cooking a tomato and egg stir-fry"}, media_root=str(tmp_path))
    assert ing.prompt.startswith("I am tasked with cooking a tomato and egg stir-fry. The task's progress")
    # a goal that says "goal" is cut after its first "to" (lmms-eval's rule, even inside a word)
    goal = task.sample({**row, "task_goal": "The goal is to make tea"}, media_root=str(tmp_path))
    assert goal.prompt.startswith("My current task is to make tea. The task's")
    tomato = task.sample({**row, "task_goal": "goal: tomato soup"}, media_root=str(tmp_path))
    assert tomato.prompt.startswith("My current task is to mato soup. The task's")
    # lmms-eval's regex: the first A-D anywhere after answer prefixes, capitals in words too
    outputs = ["B", "The answer is B", "crack egg", "E", "", "And then B"]
    assert [task.parse(o, sample) for o in outputs] == ["B", "B", "", "", "", "A"]
    assert [task.parse_lenient(o, sample) for o in outputs] == ["B", "B", "B", None, None, None]
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
    gold = sample.meta["options"][int(sample.answer)].split(". ", 1)[1]
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
    samples = [task.sample(row) for row in task.rows(str(write_task(name, tmp_path, 2, corrupt=True)))]
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
