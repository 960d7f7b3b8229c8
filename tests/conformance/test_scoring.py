"""Answer extraction, per-sample scores and aggregates against the installed lmms-eval.

For every benchmark, every corpus row is answered in every output format of the corpus
(``test_per_sample_*``): our parsed answer and score equal what lmms-eval's own
``process_results`` (the function the task yaml names, fed the stripped output as its
ConfigurableTask feeds it) makes of the same output. Then many runs, each answering
every row with one of its outputs (seeded), are aggregated by both sides
(``test_aggregates_*``): every metric of ours that lmms-eval reports is its value (ours in
percent where lmms-eval reports 0-1).

The deterministic deviation, tested separately: where lmms-eval would draw a random
letter (EgoSchema, NExTQA) or ask GPT and then guess (MMBench), its guess is replaced
here by a letter that is never right, and counted; ours must score exactly that (0) and
count the same samples as ``unparsed``.
"""

from __future__ import annotations

import json
import random
import re
from types import SimpleNamespace

import pytest
from loguru import logger

from pipeline.tasks import get_task
from pipeline.tasks._video import split_option
from pipeline.tasks.common import LETTERS
from pipeline.tasks.scoring import read, task_metrics
from tests.conformance import corpus, lmms
from tests.conformance.conftest import ROWS, our_row

NEVER_RIGHT = "Z"  # stands in for lmms-eval's random letter: no answer is Z
RUNS = 12


# ---------------------------------------------------------------- the corpus, answered


def _mc(letter: str, texts: dict[str, str]) -> list[str]:
    other = next(c for c in texts if c != letter)
    return corpus.mc_outputs(letter, texts[letter], other, texts[other])


def outputs(task: str, row: dict) -> list[str]:
    """Every output the corpus answers ``row`` with."""
    if task in ("mme", "pope"):
        return corpus.YES_NO
    if task == "gqa":
        return corpus.short_outputs(row["answer"])
    if task in ("textvqa", "okvqa"):
        return corpus.short_outputs(row["answers"][0] if row["answers"] else "nothing")
    if task == "ocrbench":
        return corpus.OCRBENCH_OUTPUTS
    if task == "mmbench":
        texts = {c: str(row[c]) for c in "ABCDE" if row.get(c) not in (None, "nan")}
        return _mc(row["answer"], texts)
    if task == "scienceqa_img":
        return _mc(LETTERS[row["answer"]], dict(zip(LETTERS, row["choices"])))
    if task == "seedbench":
        return _mc(row["answer"], {c.upper(): row[f"choice_{c}"] for c in "abcd"})
    if task == "egoschema":
        texts = {LETTERS[i]: split_option(o)[1] for i, o in enumerate(row["option"])}
        return _mc(LETTERS[int(row["answer"])], texts) + [texts["C"], f"{texts['C']} the whole time"]
    if task == "nextqa":
        return _mc(LETTERS[row["answer"]], {LETTERS[i]: row[f"a{i}"].strip() for i in range(5)})
    if task.startswith("videomme"):
        texts = {split_option(o)[0]: split_option(o)[1] for o in row["options"]}
        return _mc(row["answer"].upper(), texts)
    if task == "egoplan":
        return _mc(row["golden_choice_idx"], {c.upper(): row[f"choice_{c}"].strip() for c in "abcd"})
    raise KeyError(task)


def cases(task: str):
    """(row index, row, output) for the whole corpus of ``task``."""
    return [(i, row, out) for i, row in enumerate(ROWS[task]) for out in outputs(task, row)]


def runs(task: str):
    """RUNS answer sheets: per row one of its outputs, seeded."""
    rng = random.Random(task)
    return [[(i, row, rng.choice(outputs(task, row))) for i, row in enumerate(ROWS[task])] for _ in range(RUNS)]


@pytest.fixture
def guesses(monkeypatch):
    """lmms-eval's guesses, replaced by :data:`NEVER_RIGHT` and counted: the random letter of
    EgoSchema and NExTQA, and MMBench's GPT judge (and its random fallback)."""
    made = []

    def choice(letters):
        made.append(letters)
        return NEVER_RIGHT

    for task_dir in ("egoschema", "nextqa"):
        monkeypatch.setattr(lmms.utils(task_dir), "random", SimpleNamespace(choice=choice))
    evaluator = lmms.utils("mmbench", "en_utils").mmbench_evaluator

    def judge(item):
        made.append(item["index"])
        return NEVER_RIGHT, "the judge is not called in conformance tests"

    monkeypatch.setattr(evaluator, "extract_answer_from_item", judge)
    return made


def ours(task: str, sheet, media, lenient=False):
    """Our (samples, result rows) for an answer sheet [(row index, row, output)]."""
    job = get_task(task)
    samples = [job.sample(our_row(task, row, i), media_root=media) for i, row, _ in sheet]
    results = []
    for sample, (_, _, out) in zip(samples, sheet):
        parsed, score = read(job, out, sample, lenient=lenient)
        results.append({"parsed": parsed, "score": score, "answer": sample.answer, "meta": sample.meta,
                        "error": None})
    return samples, results


def process(task: str, row: dict, out: str):
    """lmms-eval's ``process_results`` of ``out`` for ``row`` (the output stripped first, as
    ConfigurableTask does)."""
    if task == "gqa":
        em = lmms.metrics().exact_match_hf_evaluate(predictions=[out.strip()], references=[row["answer"]],
                                                    ignore_case=True, ignore_punctuation=True)
        return {"exact_match": float(em["exact_match"])}
    doc = dict(row, answers=list(row["answers"])) if "answers" in row else dict(row)  # the VQA ones edit it
    return lmms.function(task, "process_results")(doc, [out.strip()])


# ---------------------------------------------------------------- per sample

# Per task: what lmms-eval's process_results says of one output, as (parsed, score).
PER_SAMPLE = {
    "mme": lambda r: (next(iter(r.values()))["score"],),
    "pope": lambda r: (r["pope_accuracy"]["prediction"], r["pope_accuracy"]["score"]),
    "gqa": lambda r: (r["exact_match"],),
    "scienceqa_img": lambda r: (r["exact_match"],),
    "textvqa": lambda r: (r["exact_match"],),
    "okvqa": lambda r: (r["exact_match"],),
    "ocrbench": lambda r: (r["ocrbench_accuracy"]["score"],),
    "videomme": lambda r: (r["videomme_perception_score"]["pred_answer"],
                           float(r["videomme_perception_score"]["pred_answer"]
                                 == r["videomme_perception_score"]["answer"])),
    "egoplan": lambda r: (r["egoplan_mcq_accuracy"]["pred_answer"],
                          float(r["egoplan_mcq_accuracy"]["pred_answer"]
                                == r["egoplan_mcq_accuracy"]["golden_choice_idx"])),
}
PER_SAMPLE["videomme_subtitles"] = PER_SAMPLE["videomme"]


@pytest.mark.parametrize("task", sorted(PER_SAMPLE))
def test_per_sample_scores_are_lmms_evals(task, media, guesses):
    sheet = cases(task)
    samples, results = ours(task, sheet, media)
    for (i, row, out), sample, result in zip(sheet, samples, results):
        theirs = PER_SAMPLE[task](process(task, row, out))
        mine = (result["score"],) if len(theirs) == 1 else (result["parsed"], result["score"])
        assert mine == theirs, (task, i, out)
    assert not guesses  # none of these tasks ever guesses
    assert task_metrics(get_task(task), results)["unparsed"] == 0.0


def test_per_sample_mme_reads_yes_no_as_lmms_eval():
    parse = lmms.utils("mme").parse_pred_ans
    job = get_task("mme")
    sample = job.sample(our_row("mme", corpus.MME_ROWS[0], 0))
    for out in corpus.YES_NO:
        assert job.parse(out, sample) == parse(out.strip()), out


def test_per_sample_seedbench_is_lmms_evals(media):
    aggregate = lmms.function("seedbench", "metric:seed_all")
    sheet = cases("seedbench")
    _, results = ours("seedbench", sheet, media)
    for (i, row, out), result in zip(sheet, results):
        theirs = process("seedbench", row, out)["seed_all"]
        assert (result["parsed"], result["score"]) == (theirs["pred"], aggregate([theirs])), (i, out)


def test_per_sample_egoschema_is_lmms_evals_and_guesses_are_unparsed(media, guesses):
    sheet = cases("egoschema")
    _, results = ours("egoschema", sheet, media)
    unparsed = 0
    for (i, row, out), result in zip(sheet, results):
        before = len(guesses)
        theirs = process("egoschema", row, out)["score"]
        guessed = len(guesses) > before
        their_letter = None if guessed else LETTERS[theirs["pred"]]
        assert result["parsed"] == their_letter, (i, out)
        assert result["score"] == float(str(theirs["ground_truth"]) == str(theirs["pred"])), (i, out)
        unparsed += guessed
    assert unparsed > 0  # the corpus reaches the random branch
    assert task_metrics(get_task("egoschema"), results)["unparsed"] == unparsed


def test_per_sample_nextqa_guesses_are_unparsed(media, guesses):
    sheet = cases("nextqa")
    _, results = ours("nextqa", sheet, media)
    parse = lmms.utils("nextqa").parse_multi_choice_response
    unparsed = 0
    for (i, row, out), result in zip(sheet, results):
        before = len(guesses)
        options = {LETTERS[k]: row[f"a{k}"].strip() for k in range(5)}
        letter = parse(out.strip(), list(options), options)
        guessed = len(guesses) > before
        assert result["parsed"] == (None if guessed else letter), (i, out)
        assert result["score"] == float(process("nextqa", row, out)["exact_match"]), (i, out)
        unparsed += guessed
    assert unparsed > 0
    assert task_metrics(get_task("nextqa"), results)["unparsed"] == unparsed


def test_per_sample_mmbench_reads_as_lmms_evals_evaluator_without_gpt(media):
    """Each row's letter as ``MMBench_Evaluator.can_infer`` reads it (False: it would ask GPT)."""
    en_utils = lmms.utils("mmbench", "en_utils")
    evaluator = en_utils.mmbench_evaluator
    sheet = cases("mmbench")
    _, results = ours("mmbench", sheet, media)
    judged = 0
    for (i, row, out), result in zip(sheet, results):
        item = en_utils.mmbench_process_results(dict(row), [out.strip()])["gpt_eval_score"]
        theirs = evaluator.can_infer(str(item["prediction"]), evaluator.build_choices(item))
        assert result["parsed"] == (theirs or None), (i, out)
        judged += not theirs
    assert judged > 0


# ---------------------------------------------------------------- aggregates


def _logged(fn, *args):
    """(return value, messages it logged through loguru)."""
    messages = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    try:
        return fn(*args), messages
    finally:
        logger.remove(sink)


def _scaled(values: dict) -> dict:
    return {k: 100 * v for k, v in values.items()}


def theirs_mme(processed):
    aggregate = lmms.function("mme", "metric:mme_perception_score")
    out, logged = {}, []
    for key, name in (("mme_perception_score", "perception"), ("mme_cognition_score", "cognition")):
        out[name], messages = _logged(aggregate, [r[key] for r in processed if key in r])
        logged += messages
    out.update({m.split(": ")[0]: float(m.split(": ")[1]) for m in logged})  # "<category>: 150.00"
    return out


def theirs_pope(processed, docs):
    fns = {m: lmms.function("pope", f"metric:pope_{n}") for m, n in (
        ("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "f1_score"),
        ("yes_ratio", "yes_ratio"))}
    rows = [r["pope_accuracy"] for r in processed]
    out = _scaled({m: fn(rows) for m, fn in fns.items()})
    for split in {d["category"] for d in docs}:  # what pope_adv / pope_pop / pope_random report
        part = [r for r, d in zip(rows, docs) if d["category"] == split]
        out.update(_scaled({f"{split}/{m}": fn(part) for m, fn in fns.items()}))
    return out


def _mean_of(key):
    """lmms-eval's ``mean`` aggregation of ``key``."""
    return lambda processed, docs: {"score": 100 * lmms.metrics().mean([r[key] for r in processed])}


def theirs_mmbench(processed, docs):
    aggregate = lmms.function("mmbench", "metric:gpt_eval_score")
    score = aggregate([r["gpt_eval_score"] for r in processed], None)
    details = json.loads(open("submissions/mmbench_en_dev_results.json").read())
    return {"score": score, **_scaled({f"category/{k}": v for k, v in details["category_acc"].items()}),
            **_scaled({f"l2/{k}": v for k, v in details["l2_category_acc"].items()})}


def theirs_ocrbench(processed, docs):
    module = lmms.utils("ocrbench")
    for key in module.OCRBench_score:  # a module global lmms-eval adds to on every call
        module.OCRBench_score[key] = 0
    accuracy = lmms.function("ocrbench", "metric:ocrbench_accuracy")([r["ocrbench_accuracy"] for r in processed], None)
    points = dict(module.OCRBench_score)
    recognition = sum(v for k, v in points.items() if "Recognition" in k and "Mathematical" not in k)
    return {"score": 1000 * accuracy, "text_recognition": recognition,
            **{k: v for k, v in points.items() if any(d["question_type"] == k for d in docs)}}


def theirs_seedbench(processed, docs):
    aggregate = lmms.function("seedbench", "metric:seed_all")
    out = {"score": 100 * aggregate([r["seed_all"] for r in processed])}
    for data_type in ("image", "video"):
        part = [r[f"seed_{data_type}"] for r in processed if f"seed_{data_type}" in r]
        if part:
            out[data_type] = 100 * aggregate(part)
    return out


def theirs_egoschema(processed, docs):
    return {"score": 100 * lmms.function("egoschema", "metric:score")([r["score"] for r in processed], None)}


def theirs_videomme(processed, docs):
    """The score, and the per-group percentages lmms-eval logs (of the groups present)."""
    aggregate = lmms.utils("videomme").videomme_aggregate_results
    score, logged = _logged(aggregate, [r["videomme_perception_score"] for r in processed])
    out = {"score": score}
    groups = {"video Type": "duration", "Categories": "domain", "Video Sub Categories": "sub_category",
              "Task Categories": "task_type"}
    for message in logged:  # "Evaluation on Categories: Knowledge:  50.0%"
        found = re.match(r"Evaluation on (.+?): (.+):\s+(\S+)%$", message)
        if found and found.group(1) in groups and any(d[groups[found.group(1)]] == found.group(2) for d in docs):
            out[f"{groups[found.group(1)]}/{found.group(2)}"] = float(found.group(3))
    return out


def theirs_egoplan(processed, docs):
    return {"score": 100 * lmms.function("egoplan", "metric:egoplan_mcq_accuracy")(
        [r["egoplan_mcq_accuracy"] for r in processed])}


AGGREGATES = {
    "mme": lambda processed, docs: theirs_mme(processed), "pope": theirs_pope, "gqa": _mean_of("exact_match"),
    "mmbench": theirs_mmbench, "scienceqa_img": _mean_of("exact_match"), "textvqa": _mean_of("exact_match"),
    "okvqa": _mean_of("exact_match"), "ocrbench": theirs_ocrbench, "seedbench": theirs_seedbench,
    "egoschema": theirs_egoschema, "nextqa": _mean_of("exact_match"), "videomme": theirs_videomme,
    "videomme_subtitles": theirs_videomme, "egoplan": theirs_egoplan,
}
assert set(AGGREGATES) == set(lmms.TASKS)
ROUNDED = {"mme": 2, "videomme": 1, "videomme_subtitles": 1}  # sub-metrics lmms-eval only logs, rounded


@pytest.mark.parametrize("task", sorted(AGGREGATES))
def test_aggregates_are_lmms_evals(task, media, guesses, in_tmp):
    for sheet in runs(task):
        _, results = ours(task, sheet, media)
        mine = task_metrics(get_task(task), results)
        before = len(guesses)
        theirs = AGGREGATES[task]([process(task, row, out) for _, row, out in sheet], [row for _, row, _ in sheet])
        for name, value in theirs.items():
            if task in ROUNDED and name not in ("score", "perception", "cognition"):
                assert round(mine[name], ROUNDED[task]) == pytest.approx(value), (task, name)
            else:
                assert mine[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (task, name, sheet)
        guessed = len(guesses) - before
        if task == "mmbench":  # questions whose rows leave only a GPT call: all 0, all unparsed
            assert mine["unparsed"] == guessed_questions(guesses[before:])
        elif task in ("egoschema", "nextqa"):
            assert mine["unparsed"] == guessed
        else:
            assert mine["unparsed"] == guessed == 0


def guessed_questions(indices) -> int:
    """MMBench questions lmms-eval had to ask GPT about (one call per unreadable row, but
    the first call already decides the question)."""
    return len({i % 1_000_000 for i in indices})


def test_the_corpus_reaches_every_guessing_branch(media, guesses, in_tmp):
    """The runs above would pass vacuously if no run hit a random or judge branch."""
    for task in ("egoschema", "nextqa", "mmbench"):
        before = len(guesses)
        for sheet in runs(task):
            AGGREGATES[task]([process(task, row, out) for _, row, out in sheet], [row for _, row, _ in sheet])
        assert len(guesses) > before, task


def test_metric_names_of_the_lenient_scoring_are_its_own(media):
    """The lenient scoring reads the same outputs differently and never under lmms-eval's names."""
    task = get_task("pope")
    _, results = ours("pope", cases("pope"), media)
    _, lenient = ours("pope", cases("pope"), media, lenient=True)
    rows = [{**r, "lenient_parsed": l["parsed"], "lenient_score": l["score"]} for r, l in zip(results, lenient)]
    both = task_metrics(task, rows, "lenient")
    assert both["score"] == task_metrics(task, results)["score"]
    assert both["lenient/score"] == task_metrics(task, lenient)["score"] != both["score"]


@pytest.mark.parametrize("prediction, gold", [
    ("İ", "i"), ("İ", "i\u0307"), ("noİ", "noi"), ("yes\x00", "yes"), ("yes\x00.", "yes"), ("a\x00b", "ab"),
    ("Yes.", "yes"), ("yes .", "yes"), ("T-Shirt", "tshirt"), ("ΣΑΣ", "σας"), ("ẞ", "ß"), (" left", "left"),
])
def test_exact_match_is_lmms_evals_numpy_comparison(prediction, gold):
    """GQA's metric compares numpy fixed-width strings: lower-casing cannot grow them."""
    from pipeline.tasks.common import exact_match

    em = lmms.metrics().exact_match_hf_evaluate(predictions=[prediction], references=[gold], ignore_case=True,
                                                ignore_punctuation=True)["exact_match"]
    assert exact_match(prediction, gold) == em
