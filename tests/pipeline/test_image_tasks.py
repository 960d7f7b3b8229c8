"""Image benchmarks on tiny datasets written in each benchmark's real column layout
(parquet with HF Image features), read back through ``Task.rows``: exact prompt text
(lmms-eval 0.7.3's, snapshot), images, ids, generation settings, and lmms-eval's scoring
and aggregation (and the lenient one) on hand-computed cases. tests/conformance runs
the same against the lmms-eval package itself."""

from __future__ import annotations

import io

import datasets
import pytest
from PIL import Image

from pipeline.tasks import get_task
from pipeline.tasks.ocrbench import ocr_match
from pipeline.tasks.scoring import read, task_metrics


def _image(color=(200, 10, 10), size=(12, 8)):
    return Image.new("RGB", size, color)


def write_parquet(path, columns: dict, images=("image",)):
    """One parquet file with ``images`` columns stored as HF Image (or list of Image) features."""
    plain = {k: v for k, v in columns.items() if k not in images}
    features = datasets.Dataset.from_dict(plain).features if plain else datasets.Features()
    for name in images:
        is_list = isinstance(columns[name][0], list)
        features[name] = [datasets.Image()] if is_list else datasets.Image()
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))
    return path


def samples_of(task, data, **kw):
    samples = [task.sample(row, **kw) for row in task.rows(str(data))]
    assert len({s.id for s in samples}) == len(samples), "ids must be unique"
    return samples


def results_of(task, samples, outputs, lenient=False):
    results = []
    for s, out in zip(samples, outputs):
        parsed, score = read(task, out, s, lenient=lenient)
        results.append({"parsed": parsed, "score": score, "answer": s.answer, "meta": s.meta, "error": s.error})
    return results


def metrics_of(task, samples, outputs, lenient=False):
    return task_metrics(task, results_of(task, samples, outputs, lenient))


def decoded(sample, i=0):
    return Image.open(io.BytesIO(sample.images[i]))


# ---------------------------------------------------------------- MME


def test_mme_prompt_and_acc_plus(tmp_path):
    qs = ["Is there a dog in this image? Please answer yes or no.", "Is there a cat in this image? Please answer yes or no.",
          "Are there two people? Please answer yes or no.", "Are there three people? Please answer yes or no.",
          "Is 1+1=2? Please answer yes or no.", "Is 1+1=3? Please answer yes or no."]
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", {
        "question_id": ["e/1.png", "e/1.png", "c/2.png", "c/2.png", "n/3.png", "n/3.png"],
        "image": [_image()] * 6, "question": qs, "answer": ["Yes", "No"] * 3,
        "category": ["existence", "existence", "count", "count", "numerical_calculation", "numerical_calculation"],
    })
    task = get_task("mme")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == "Is there a dog in this image?\nAnswer the question using a single word or phrase."
    assert (samples[0].answer, samples[0].meta, samples[0].max_new_tokens, samples[0].until) == (
        "yes", {"question_id": "e/1.png", "category": "existence"}, 16, ("\n\n",))
    assert decoded(samples[0]).size == (12, 8)
    # existence: both right; count: one of two right; calculation: unreadable + right
    outputs = ["Yes", "No.", "Yes", "Yes", "Maybe", "no"]
    assert [task.parse(o, s) for o, s in zip(outputs, samples)] == ["yes", "no", "yes", "yes", "other", "no"]
    metrics = metrics_of(task, samples, outputs)
    assert metrics["existence"] == 200.0
    assert (metrics["count/acc"], metrics["count/acc_plus"], metrics["count"]) == (50.0, 0.0, 50.0)
    assert metrics["numerical_calculation"] == 50.0
    assert (metrics["perception"], metrics["cognition"], metrics["score"]) == (250.0, 50.0, 300.0)
    assert metrics["unparsed"] == 0.0  # "other" is read, and wrong: lmms-eval never guesses here


# ---------------------------------------------------------------- POPE


def test_pope_prompt_and_f1_with_yes_positive(tmp_path):
    answers = ["yes", "yes", "yes", "yes", "no", "no", "no", "no"]
    write_parquet(tmp_path / "test.parquet", {
        "id": [str(i) for i in range(8)], "question_id": [str(i % 4 + 1) for i in range(8)],
        "question": ["Is there a snowboard in the image?"] * 8, "answer": answers,
        "image_source": ["COCO_val2014_000000310196"] * 8, "image": [_image()] * 8,
        "category": ["adversarial"] * 4 + ["random"] * 4,
    })
    task = get_task("pope")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == "Is there a snowboard in the image?\nAnswer the question using a single word or phrase."
    assert samples[0].id == "adversarial/1" and samples[0].answer == "yes"
    assert (samples[0].max_new_tokens, samples[0].until) == (128, ("\n\n",))
    outputs = ["Yes", "Yes.", "No", "hmm", "Yes", "No", "No", "No"]
    # lmms-eval: the exact word only ("Yes." is neither): TP 1, FN 1, FP 1, TN 3, 2 neither
    metrics = metrics_of(task, samples, outputs)
    assert metrics["accuracy"] == 50.0 and metrics["precision"] == 50.0 and metrics["recall"] == 50.0
    assert metrics["score"] == metrics["f1"] == 50.0
    assert metrics["yes_ratio"] == 50.0  # lmms-eval's: the share of "yes" among the gold answers
    assert metrics["adversarial/f1"] == pytest.approx(100 * 2 / 3)  # P 1, R 1/2
    assert metrics["adversarial/accuracy"] == 25.0 and metrics["random/f1"] == 0.0
    assert metrics["random/accuracy"] == 75.0 and metrics["random/yes_ratio"] == 0.0
    # lenient: the MME yes/no reading: TP 2, FN 1, FP 1, TN 3, 1 unreadable
    lenient = metrics_of(task, samples, outputs, lenient=True)
    assert lenient["accuracy"] == pytest.approx(100 * 5 / 8)
    assert lenient["precision"] == lenient["recall"] == lenient["f1"] == pytest.approx(100 * 2 / 3)
    assert lenient["unparsed"] == 1.0 and metrics["unparsed"] == 0.0


# ---------------------------------------------------------------- GQA


def test_gqa_joins_images_config_and_scores_exact_match(tmp_path):
    write_parquet(tmp_path / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", {
        "id": ["201307251", "201640614", "202225914"], "imageId": ["n7768", "n7768", "n9999"],
        "question": ["Is it overcast?", "Who is wearing a dress?", "What color is the car?"],
        "answer": ["no", "woman", "red"], "fullAnswer": ["No, it is clear.", "The woman is.", "Red."],
        "isBalanced": [True] * 3,
    }, images=())
    write_parquet(tmp_path / "testdev_balanced_images" / "testdev-00000-of-00001.parquet",
                  {"id": ["n7768"], "image": [_image(size=(20, 10))]})
    task = get_task("gqa")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == "Is it overcast?\nAnswer the question using a single word or phrase."
    assert samples[0].id == "201307251" and decoded(samples[1]).size == (20, 10)
    assert samples[2].error and not samples[2].images  # image n9999 is in neither place
    (tmp_path / "media").mkdir()
    _image(size=(3, 3)).save(tmp_path / "media" / "n9999.jpg")
    assert decoded(samples_of(task, tmp_path, media_root=str(tmp_path / "media"))[2]).size == (3, 3)
    results = results_of(task, samples, ["No.", "The woman", "red"])
    assert [r["score"] for r in results] == [1.0, 0.0, 1.0]
    assert task.aggregate(results)["score"] == pytest.approx(100 / 3)  # the error row counts as wrong
    # lmms-eval strips the output, then drops punctuation, and compares: "no ." is not "no"
    assert [task.score(task.parse(o, samples[0]), samples[0]) for o in (" no ", "no .", "N-o", "No!")] == [
        1.0, 0.0, 1.0, 1.0]
    assert task.score_lenient(task.parse_lenient("no .", samples[0]), samples[0]) == 1.0


# ---------------------------------------------------------------- MMBench


def test_mmbench_prompt_and_circular_scoring(tmp_path):
    # question 1 in two rotations (index 1 and 1_000_001), question 2 in two rotations, question 3 once;
    # absent options are nulls or the string "nan", as in the hub's files
    write_parquet(tmp_path / "en" / "dev-00000-of-00001.parquet", {
        "index": [1, 1_000_001, 2, 1_000_002, 3],
        "question": ["Which animal is shown?"] * 2 + ["What is the weather?"] * 2 + ["How many are red?"],
        "hint": ["The picture was taken at a farm.", "The picture was taken at a farm.", "nan", None, ""],
        "A": ["cat", "dog", "sunny", "rainy", "None"], "B": ["dog", "cow", "rainy", "sunny", "Some"],
        "C": ["cow", "cat", "nan", "nan", "All"], "D": [None] * 5,
        "answer": ["B", "A", "A", "B", "A"], "category": ["animal"] * 2 + ["weather"] * 2 + ["animal"],
        "L2-category": ["x"] * 2 + ["y"] * 2 + ["x"], "source": ["s"] * 5, "split": ["dev"] * 5,
        "image": [_image()] * 5,
    })
    task = get_task("mmbench")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == (
        "The picture was taken at a farm. Which animal is shown? There are several options:\n"
        "A. cat\nB. dog\nC. cow\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert samples[2].prompt == (
        "What is the weather? There are several options:\nA. sunny\nB. rainy\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    # an empty hint is still printed (lmms-eval drops only missing and "nan"); "None" is an option
    assert samples[4].prompt.startswith(" How many are red? There are several options:\nA. None\nB. Some\nC. All\n\n")
    assert [s.id for s in samples] == ["1", "1000001", "2", "1000002", "3"]
    assert (samples[0].max_new_tokens, samples[0].until) == (1024, ("ASSISTANT:",))
    # "(A) dog" reads as A, "none" as the option "None"; the last rotation of question 2 is wrong
    metrics = metrics_of(task, samples, ["B", "(A) dog", "A", "A", "none"])
    assert metrics["score"] == pytest.approx(200 / 3) and metrics["questions"] == 3.0
    assert (metrics["category/animal"], metrics["category/weather"], metrics["l2/x"], metrics["l2/y"]) == (
        100.0, 0.0, 100.0, 0.0)
    assert metrics["unparsed"] == 0.0
    # "sunny" reads as A ("nan" is an option text the evaluator matches too); "I cannot tell" is
    # where lmms-eval asks GPT: question 1 scores 0 and counts as unparsed
    metrics = metrics_of(task, samples, ["B", "I cannot tell", "sunny", "B.", "none"])
    assert metrics["score"] == pytest.approx(200 / 3) and metrics["unparsed"] == 1.0
    # a rotation already wrong decides the question: no GPT call, not unparsed
    assert metrics_of(task, samples, ["C", "I cannot tell", "A", "B", "A"])["unparsed"] == 0.0
    # lenient: the tolerant letter parser, "The answer is (A)" and option texts
    lenient = metrics_of(task, samples, ["The answer is B", "dog", "sunny", "B", "None"], lenient=True)
    assert lenient["score"] == 100.0 and lenient["unparsed"] == 0.0


# ---------------------------------------------------------------- ScienceQA-IMG


def test_scienceqa_img_prompt_with_and_without_context(tmp_path):
    write_parquet(tmp_path / "ScienceQA-IMG" / "test-00000-of-00001.parquet", {
        "image": [_image(), _image()],
        "question": ["Which of these states is farthest north?", "Which animal's feet are also adapted for digging?"],
        "choices": [["West Virginia", "Louisiana", "Arizona", "Oklahoma"], ["aardvark", "goat"]],
        "answer": [0, 1], "hint": ["", "Moles are adapted for digging."],
        "task": ["closed choice"] * 2, "subject": ["social science", "natural science"],
    })
    task = get_task("scienceqa_img")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == (
        "Which of these states is farthest north?\nA. West Virginia\nB. Louisiana\nC. Arizona\nD. Oklahoma\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert samples[1].prompt == (
        "Context: Moles are adapted for digging.\nWhich animal's feet are also adapted for digging?\n"
        "A. aardvark\nB. goat\nAnswer with the option's letter from the given choices directly."
    )
    assert [s.answer for s in samples] == ["A", "B"] and [s.id for s in samples] == ["0", "1"]
    # lmms-eval credits the letter alone (any case) or "X." at the start; not "(A)" nor the text
    outputs = ["A", "a", "A. West Virginia", "a. West Virginia", "(A)", "A) West", "West Virginia", "B"]
    assert [task.score(task.parse(o, samples[0]), samples[0]) for o in outputs] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert [task.parse_lenient(o, samples[0]) for o in outputs] == ["A", None, "A", "A", "A", "A", "A", "B"]
    results = results_of(task, samples, ["A.", "aardvark"])
    assert [r["parsed"] for r in results] == ["a", ""]
    assert task.aggregate(results)["score"] == 50.0


# ---------------------------------------------------------------- TextVQA and OK-VQA


def test_textvqa_prompt_and_vqa_accuracy(tmp_path):
    write_parquet(tmp_path / "validation-00000-of-00003.parquet", {
        "image_id": ["003a8ae2ef43b901"], "question_id": [34602], "question": ["what is the brand of this camera?"],
        "answers": [["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota",
                     "dakota digital", "dakota digital", "dakota", "dakota"]],
        "ocr_tokens": [["DAKOTA"]], "image": [_image()],
    })
    task = get_task("textvqa")
    [sample] = samples_of(task, tmp_path)
    assert sample.prompt == "What is the brand of this camera?\nAnswer the question using a single word or phrase."
    assert sample.id == "34602" and len(sample.answer) == 10
    assert (sample.max_new_tokens, sample.until) == (None, ("ASSISTANT:",))
    results = results_of(task, [sample, sample], ["Dakota.", "dakota digital"])
    assert [r["score"] for r in results] == [1.0, pytest.approx(0.9)]
    assert task.aggregate(results)["score"] == pytest.approx(95.0)


def test_okvqa_prompt_and_vqa_accuracy(tmp_path):
    write_parquet(tmp_path / "val2014-00000-of-00001.parquet", {
        "question_id": ["2971475"], "question": ["What sport can you use this for?"],
        "answers": [["race", "race", "race", "race", "race", "race", "motocross", "motocross", "ride", "ride"]],
        "image": [_image()],
    })
    task = get_task("okvqa")
    [sample] = samples_of(task, tmp_path)
    assert sample.prompt == (
        "What sport can you use this for?\nWhen the provided information is insufficient, respond with "
        "'Unanswerable'.\nAnswer the question using a single word or phrase."
    )
    results = results_of(task, [sample, sample], ["Race", "motocross"])
    assert [r["score"] for r in results] == [1.0, pytest.approx(0.6)]


# ---------------------------------------------------------------- OCRBench


def test_ocrbench_substring_scoring_and_points(tmp_path):
    write_parquet(tmp_path / "test-00000-of-00001.parquet", {
        "dataset": ["IIIT5K", "HME100k", "docVQA", "IIIT5K"],
        "question": ["what is written in the image? ", "Please write out the expression of the formula in the image using LaTeX format.",
                     "What is the date?", "what is written in the image?"],
        "question_type": ["Regular Text Recognition", "Handwritten Mathematical Expression Recognition",
                          "Doc-oriented VQA", "Regular Text Recognition"],
        "answer": [["CHAIR"], ["x ^ { 2 } + 1"], ["May 5, 1990", "5/5/1990"], ["TABLE"]],
        "image": [_image()] * 4,
    })
    task = get_task("ocrbench")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == "what is written in the image?"
    assert (samples[0].max_new_tokens, samples[0].until) == (128, ("\n\n",))
    assert [s.id for s in samples] == ["0", "1", "2", "3"]
    outputs = ["The word is chair.", "$x^{2}+1$", "it says 5/5/1990", "tablet"]
    assert [r["score"] for r in results_of(task, samples, outputs)] == [1.0, 1.0, 1.0, 1.0]
    # HME100k drops spaces and compares case-sensitively (lmms-eval)
    assert ocr_match("\\frac{A}{2}", ["\\frac { A } { 2 }"], "HME100k") == 1.0
    assert ocr_match("\\frac{a}{2} ", ["\\frac { A } { 2 }"], "HME100k") == 0.0
    assert ocr_match("a b", ["AB"], "IIIT5K") == 0.0 and ocr_match("it is ab", ["AB"], "IIIT5K") == 1.0
    # full-width ASCII folds to ASCII elsewhere (and the ideographic space to a space)
    assert ocr_match("ＣＨＡＩＲ", ["chair"], "IIIT5K") == 1.0 and ocr_match("a\u3000b", ["A B"], "IIIT5K") == 1.0
    assert ocr_match("ｘ^{2}", ["x^{2}"], "HME100k") == 0.0
    metrics = task.aggregate(results_of(task, samples, outputs[:3] + ["chair"]))
    assert metrics["score"] == 3.0  # points, as lmms-eval's Final Score (its accuracy is that / 1000)
    assert metrics["Regular Text Recognition"] == 1.0 and metrics["text_recognition"] == 1.0


# ---------------------------------------------------------------- SEED-Bench


def test_seedbench_prompt_all_images_and_first_character(tmp_path):
    write_parquet(tmp_path / "test-00000-of-00001.parquet", {
        "answer": ["A", "C"], "choice_a": ["One", "left"], "choice_b": ["Two", "right"],
        "choice_c": ["Three", "up"], "choice_d": ["Four", "down"], "data_id": ["1454426_2591111986", "v1"],
        "data_type": ["image", "video"], "question": ["How many towels are in the image?", "Where does it move?"],
        "question_id": ["101669", "20"], "question_type_id": [5, 10],
        "image": [[_image()], [_image((0, 0, 255)), _image((0, 255, 0))]],
    })
    task = get_task("seedbench")
    samples = samples_of(task, tmp_path)
    assert samples[0].prompt == (
        "How many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert len(samples[0].images) == 1 and len(samples[1].images) == 2
    assert decoded(samples[1], 1).getpixel((0, 0)) == (0, 255, 0)
    assert (samples[0].max_new_tokens, samples[0].until) == (None, ("ASSISTANT:",))  # the model's default
    results = results_of(task, samples, ["A. One", "(C)"])
    assert [r["parsed"] for r in results] == ["A", "("]
    assert task.aggregate(results) == {"score": 50.0, "image": 100.0, "video": 0.0}
    assert [r["score"] for r in results_of(task, samples, ["a", "c is right"])] == [1.0, 1.0]  # any case
    assert [r["parsed"] for r in results_of(task, samples, ["A. One", "(C)"], lenient=True)] == ["A", "C"]


# ---------------------------------------------------------------- bad media


@pytest.mark.parametrize("name", ["mme", "pope", "textvqa", "okvqa", "ocrbench", "mmbench"])
def test_missing_or_unreadable_image_sets_error_instead_of_raising(name):
    task = get_task(name)
    row = {"_index": 0, "question_id": "q1", "question": "What?", "answer": "yes", "answers": ["a"] * 10,
           "category": "existence", "dataset": "IIIT5K", "question_type": "Regular Text Recognition",
           "index": 5, "hint": None, "A": "x", "B": "y"}
    for image in (None, b"\x89PNG broken", "/no/such/file.jpg"):
        sample = task.sample({**row, "image": image})
        assert sample.error and sample.images == [] and sample.prompt


def test_seedbench_and_scienceqa_without_images_set_error():
    seed = get_task("seedbench").sample({"question": "Q?", "question_id": "1", "answer": "A", "image": [],
                                         **{f"choice_{c}": c for c in "abcd"}})
    assert seed.error == "no image"
    sqa = get_task("scienceqa_img").sample({"_index": 3, "question": "Q?", "choices": ["a", "b"], "answer": 0,
                                            "hint": "", "image": None})
    assert sqa.error == "no image" and sqa.id == "3"
