"""Outputs nobody wrote down: seeded random outputs assembled from the pieces answers are
made of (letters with their brackets and dots, option texts, answer phrases, yes/no,
numbers, punctuation, articles, blank lines, full-width characters), read by ours and by
lmms-eval's functions, per corpus row. The corpus tests say which cases we thought of;
these look for the ones we did not."""

from __future__ import annotations

import random

import pytest

from pipeline.tasks import get_task
from pipeline.tasks.common import vqa_normalize
from pipeline.tasks.scoring import read
from tests.conformance import lmms
from tests.conformance.conftest import ROWS, our_row
from tests.conformance.test_scoring import PER_SAMPLE, guesses, process  # noqa: F401 (fixture)

N = 400  # outputs per row
PIECES = ["A", "B", "C", "D", "E", "a", "b", "(", ")", "[", "]", ".", ",", ":", ";", "!", "?", "'", '"', " ", " ",
          " ", "\n", "\n\n", "\t", "-", "The answer is", "answer:", "Option", "is", "the", "an", "I think",
          "correct", "yes", "no", "Yes", "No", "not", "two", "2", "10", "3.5", "1,000", "none", "ＡＢ", "\u3000",
          "dog", "cat", "Berries", "cleaning", "left", "woman", "t-shirt", "dakota", "race", "CHAIR", "x ^ { 2 }"]


def soup(rng: random.Random, row: dict) -> str:
    texts = [str(v) for v in row.values() if isinstance(v, str) and 0 < len(v) < 40]
    parts = rng.choices(PIECES + texts, k=rng.randint(0, 9))
    return "".join(p + (" " if rng.random() < 0.5 else "") for p in parts)


@pytest.mark.parametrize("task", sorted(PER_SAMPLE) + ["nextqa", "egoschema", "seedbench"])
def test_random_outputs_score_as_in_lmms_eval(task, media, guesses):  # noqa: F811
    job = get_task(task)
    rng = random.Random(f"fuzz-{task}")
    for i, row in enumerate(ROWS[task]):
        sample = job.sample(our_row(task, row, i), media_root=media)
        for _ in range(N):
            out = soup(rng, row)
            before = len(guesses)
            processed = process(task, row, out)
            parsed, score = read(job, out, sample)
            if task in PER_SAMPLE:
                theirs = PER_SAMPLE[task](processed)
                assert ((score,) if len(theirs) == 1 else (parsed, score)) == theirs, (task, i, out)
            elif task == "seedbench":
                their = processed["seed_all"]
                assert (parsed, score) == (their["pred"], float(their["pred"].lower().strip()
                                                                 == their["answer"].lower().strip())), (i, out)
            else:  # the guessing tasks: a guess is ours unparsed, and scores 0 on both sides
                guessed = len(guesses) > before
                assert (parsed is None) == guessed, (task, i, out)
                theirs = processed["score"] if task == "egoschema" else processed
                their_score = (float(str(theirs["ground_truth"]) == str(theirs["pred"])) if task == "egoschema"
                               else float(theirs["exact_match"]))
                assert score == their_score, (task, i, out)


def test_random_outputs_read_by_mmbench_as_lmms_eval(media):
    en_utils = lmms.utils("mmbench", "en_utils")
    evaluator = en_utils.mmbench_evaluator
    job = get_task("mmbench")
    rng = random.Random("fuzz-mmbench")
    for i, row in enumerate(ROWS["mmbench"]):
        sample = job.sample(our_row("mmbench", row, i), media_root=media)
        for _ in range(N):
            out = soup(rng, row)
            item = en_utils.mmbench_process_results(dict(row), [out.strip()])["gpt_eval_score"]
            theirs = evaluator.can_infer(str(item["prediction"]), evaluator.build_choices(item))
            assert job.parse(out, sample) == (theirs or None), (i, out)


def test_random_answers_normalise_as_lmms_evals_vqa_processor():
    processor = lmms.utils("textvqa").EvalAIAnswerProcessor()
    rng = random.Random("fuzz-vqa")
    for _ in range(3000):
        text = soup(rng, {})
        assert vqa_normalize(text) == processor(text), text
