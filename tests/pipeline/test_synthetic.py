"""synthetic_fine: the generator (pipeline/synthetic.py), its task, its sample writer."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline import synthetic
from pipeline.samples import write_task
from pipeline.tasks import get_task
from pipeline.tasks.synthetic_fine import parse_colour, parse_number


def digest(ex: synthetic.Example) -> str:
    pixels = np.asarray(ex.image) if ex.image is not None else ex.frames
    return hashlib.sha1(pixels.tobytes() + repr((ex.question, ex.options, ex.answer)).encode()).hexdigest()


def test_examples_are_a_function_of_split_and_index():
    assert [digest(synthetic.example("test", i)) for i in range(6)] == \
        [digest(synthetic.example("test", i)) for i in range(6)]
    train = {digest(synthetic.example("train", i)) for i in range(60)}
    test = {digest(synthetic.example("test", i)) for i in range(60)}
    assert len(train) == 60 and len(test) == 60 and not train & test


def test_kinds_take_turns_and_media_have_the_documented_size():
    for i in range(10):
        ex = synthetic.example("validation", i)
        assert ex.kind == synthetic.KINDS[i % len(synthetic.KINDS)]
        if ex.kind == "moved":
            assert ex.image is None
            assert ex.frames.shape == (synthetic.VIDEO_FRAMES, synthetic.VIDEO_SIZE, synthetic.VIDEO_SIZE, 3)
        else:
            assert ex.frames is None and ex.image.size == (synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE)


def test_bad_split_or_index_is_refused():
    with pytest.raises(ValueError, match="split"):
        synthetic.example("dev", 0)
    with pytest.raises(ValueError, match="index"):
        synthetic.example("test", -1)
    with pytest.raises(ValueError, match="scale"):
        synthetic.example("test", 0, scale=0.5)


@pytest.mark.parametrize("index", range(0, 50, 5))
def test_colour_answer_is_the_colour_at_the_object(index):
    ex = synthetic.example("test", index)
    assert ex.kind == "colour" and ex.options == []
    (shape, colour, x, y, side), = ex.details["objects"]
    assert ex.answer == colour
    centre = np.asarray(ex.image)[y + side // 2, x + side // 2]
    assert np.abs(centre.astype(int) - synthetic.COLOURS[colour]).max() <= 8  # background noise is +-6


def test_each_object_lies_in_one_of_the_144_tokens():
    """Objects are centred on cells of the 28 px token grid: what pruning keeps decides
    the answer."""
    for i in (0, 1, 2, 5, 7):
        for shape, colour, x, y, side in synthetic.example("test", i).details["objects"]:
            assert x // 28 == (x + side - 1) // 28 and y // 28 == (y + side - 1) // 28


def test_answers_follow_the_details():
    by_kind = {}
    for i in range(30):
        ex = synthetic.example("test", i)
        by_kind.setdefault(ex.kind, []).append(ex)
    for ex in by_kind["shape"]:
        assert ex.options == list(synthetic.SHAPES)
        assert ex.answer == "ABCD"[synthetic.SHAPES.index(ex.details["objects"][0][0])]
    for ex in by_kind["count"]:
        assert ex.options == [] and ex.answer == str(len(ex.details["objects"])) and 1 <= int(ex.answer) <= 4
    for ex in by_kind["digit"]:
        assert ex.answer == str(ex.details["digit"])
    for ex in by_kind["moved"]:
        assert ex.answer == ex.details["mover"] in [o[1] for o in ex.details["objects"]]
        assert len(ex.details["movers"]) == 1
        moving = np.abs(ex.frames[-1].astype(int) - ex.frames[0].astype(int)).max(axis=-1) > 60
        assert moving.any()


def test_scale_draws_the_same_question_with_larger_objects():
    small, large = synthetic.example("train", 0), synthetic.example("train", 0, scale=3.0)
    assert (small.kind, small.answer) == (large.kind, large.answer)
    assert large.details["objects"][0][4] >= 3 * synthetic.OBJECT_SIZE[0] - 1


def test_prompts_are_the_benchmark_style_text():
    assert synthetic.prompt_text("What colour is the small shape?", ["red", "blue", "pink", "green"]) == (
        "What colour is the small shape?\nA. red\nB. blue\nC. pink\nD. green\n"
        "Answer with the option's letter from the given choices directly.")
    assert synthetic.prompt_text("How many small shapes are there in the image?", []) == (
        "How many small shapes are there in the image?\nAnswer the question using a single word or phrase.")


@pytest.mark.parametrize("output, parsed", [
    ("3", "3"), ("3.", "3"), ("There are three.", "3"), ("Four", "4"), ("07", "7"), ("none", None), ("", None),
])
def test_parse_number(output, parsed):
    assert parse_number(output) == parsed


@pytest.mark.parametrize("output, parsed", [
    ("red", "red"), ("Red.", "red"), ("It is pink", "pink"), ("red or blue", None), ("reddish", None), ("", None),
])
def test_parse_colour(output, parsed):
    assert parse_colour(output) == parsed


def test_task_reads_the_written_set_and_scores_per_kind(tmp_path):
    root = write_task("synthetic_fine", tmp_path, 10, corrupt=True)
    assert (root / "test.parquet").is_file() and len(list((root / "videos").glob("*.mp4"))) == 2
    task = get_task("synthetic_fine")
    samples = [task.sample(row) for row in task.rows(str(root))]
    assert [s.id for s in samples] == [f"test-{i:05d}" for i in range(12)]
    assert [bool(s.error) for s in samples] == [False] * 10 + [True, True]
    for i, s in enumerate(samples[:10]):
        ex = synthetic.example("test", i)
        assert s.prompt == synthetic.prompt(ex) and s.answer == ex.answer and s.meta["kind"] == ex.kind
        assert (s.video is not None) == (ex.kind == "moved") and (len(s.images) == 1) == (ex.kind != "moved")
    results = []
    for s in samples:  # fixed guesses for the first five rows, the gold answers after them
        output = {"colour": "Red.", "shape": "B", "count": "2", "digit": "7", "moved": "pink"}[s.meta["kind"]]
        parsed = task.parse(output if s.id < "test-00005" else s.answer, s)
        results.append({"parsed": parsed, "score": task.score(parsed, s), "answer": s.answer, "meta": s.meta,
                        "error": s.error})
    metrics = task.aggregate(results)
    assert [r["score"] for r in results[5:10]] == [1.0] * 5
    expected = [r["score"] if not r["error"] else 0.0 for r in results]
    assert metrics["score"] == pytest.approx(100 * sum(expected) / 12)
    assert set(synthetic.KINDS) <= set(metrics)


def test_other_splits_are_written_on_request(tmp_path):
    root = write_task("synthetic_fine", tmp_path, 2, split="validation")
    rows = list(get_task("synthetic_fine").rows(str(root), split="validation"))
    assert [r["id"] for r in rows] == ["validation-00000", "validation-00001"]
    assert rows[0]["question"] == synthetic.example("validation", 0).question
