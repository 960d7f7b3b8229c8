"""Shared task helpers: reading real parquet/jsonl files, encoding images, answer parsing,
and the lmms-eval metrics on their documented edge cases."""

from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from pipeline.tasks import common
from pipeline.tasks.common import (encode_image, exact_match, exact_match_lenient, hub_candidates, load_rows,
                                   mc_prompt, parse_letter, parse_yes_no, vqa_accuracy, vqa_normalize)


def _png(color=(255, 0, 0), size=(8, 6), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------- reading rows


def test_load_rows_reads_parquet_sorted_by_name_with_images(tmp_path):
    for name, start in (("b-00001.parquet", 2), ("a-00000.parquet", 0)):
        datasets.Dataset.from_dict(
            {"q": [f"q{start}", f"q{start + 1}"], "image": [Image.new("RGB", (4, 3))] * 2},
            features=datasets.Features({"q": datasets.Value("string"), "image": datasets.Image()}),
        ).to_parquet(str(tmp_path / name))
    rows = list(load_rows(str(tmp_path)))
    assert [r["q"] for r in rows] == ["q0", "q1", "q2", "q3"]
    assert [r["_index"] for r in rows] == [0, 1, 2, 3]
    # images stay encoded ({"bytes", "path"}) so a corrupt one cannot stop the read
    with Image.open(io.BytesIO(rows[0]["image"]["bytes"])) as image:
        assert image.size == (4, 3)
    assert [r["q"] for r in load_rows(str(tmp_path), limit=3)] == ["q0", "q1", "q2"]


def test_load_rows_follows_hub_repo_layout_config_folder_and_split_prefix(tmp_path):
    (tmp_path / "Full").mkdir()
    for split in ("adversarial", "random"):
        datasets.Dataset.from_dict({"q": [split]}).to_parquet(str(tmp_path / "Full" / f"{split}-00000-of-00001.parquet"))
    hub = (("lmms-lab/POPE", "Full", "adversarial"),)
    assert [r["q"] for r in load_rows(str(tmp_path), hub)] == ["adversarial"]
    assert [r["q"] for r in load_rows(str(tmp_path), hub, split="random")] == ["random"]
    datasets.Dataset.from_dict({"q": ["testdev"]}).to_parquet(str(tmp_path / "Full" / "testdev-00000.parquet"))
    assert [r["q"] for r in load_rows(str(tmp_path / "Full"), split="testdev")] == ["testdev"]
    assert [r["q"] for r in load_rows(str(tmp_path / "Full"), split="test")] == ["adversarial", "random", "testdev"]


def test_load_rows_reads_a_save_to_disk_folder(tmp_path):
    datasets.Dataset.from_dict({"q": ["a", "b"]}).save_to_disk(str(tmp_path / "saved"))
    assert [r["q"] for r in load_rows(str(tmp_path / "saved"))] == ["a", "b"]


def test_load_rows_reads_jsonl_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answers": ["a", "b"]}) for i in range(3)))
    rows = list(load_rows(str(path), limit=2))
    assert [(r["question"], r["answers"]) for r in rows] == [("q0", ["a", "b"]), ("q1", ["a", "b"])]


def test_hub_ids_are_tried_under_every_owner_prefix(monkeypatch):
    assert hub_candidates("lmms-lab/MME") == ["lmms-lab/MME", "lmms-eval/MME", "lmms-lab-encoder/MME"]
    assert hub_candidates("lmms-lab-encoder/GQA")[1:] == ["lmms-lab/GQA", "lmms-eval/GQA"]
    assert hub_candidates("echo840/OCRBench") == ["echo840/OCRBench"]

    calls = []

    def load_dataset(path, name=None, split=None):  # the hub itself is out of reach offline
        calls.append((path, name, split))
        if path != "lmms-lab-encoder/MMBench":
            raise FileNotFoundError(path)
        return datasets.Dataset.from_dict({"index": [7]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows = list(load_rows("lmms-lab/MMBench", (("lmms-lab/MMBench", "en", "dev"),)))
    assert rows == [{"index": 7, "_index": 0}]
    assert calls == [("lmms-lab/MMBench", "en", "dev"), ("lmms-eval/MMBench", "en", "dev"),
                     ("lmms-lab-encoder/MMBench", "en", "dev")]
    calls.clear()
    with pytest.raises(FileNotFoundError, match="lmms-eval/MME"):
        list(load_rows(None, (("lmms-lab/MME", None, "test"),)))
    assert [c[0] for c in calls] == ["lmms-lab/MME", "lmms-eval/MME", "lmms-lab-encoder/MME"]


# ---------------------------------------------------------------- images


def test_encode_image_accepts_every_form_and_passes_jpeg_png_through(tmp_path):
    png, jpeg = _png(), _png(fmt="JPEG")
    (tmp_path / "x.jpg").write_bytes(jpeg)
    assert encode_image(png) == png
    assert encode_image({"bytes": jpeg, "path": None}) == jpeg
    assert encode_image({"bytes": None, "path": str(tmp_path / "x.jpg")}) == jpeg
    assert encode_image("x.jpg", root=str(tmp_path)) == jpeg
    decoded = Image.open(io.BytesIO(encode_image(Image.new("RGB", (5, 7), (0, 255, 0)))))
    assert (decoded.format, decoded.size, decoded.getpixel((0, 0))) == ("PNG", (5, 7), (0, 255, 0))
    bmp = Image.open(io.BytesIO(encode_image(_png(fmt="BMP"))))
    assert bmp.format == "PNG" and bmp.getpixel((0, 0)) == (255, 0, 0)
    cmyk = Image.open(io.BytesIO(encode_image(Image.new("CMYK", (2, 2)))))
    assert cmyk.mode == "RGB"


@pytest.mark.parametrize("value, message", [
    (None, "no image"), (b"not an image", "unreadable image"), ("missing.jpg", "not found"),
    ({"bytes": None, "path": None}, "neither bytes nor path"), (3, "cannot read"),
])
def test_encode_image_raises_a_clear_error(value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        encode_image(value, root=str(tmp_path))


# ---------------------------------------------------------------- prompts and parsing


def test_mc_prompt_lists_options_then_instruction():
    assert mc_prompt("Which?", ["cat", "dog"], context="Context: pets") == (
        "Context: pets\nWhich?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
    )


@pytest.mark.parametrize("output, letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B) dog", "B"), ("B: dog", "B"), (" [C] ", "C"),
    ("The answer is B", "B"), ("The answer is (C).", "C"), ("Answer: A", "A"), ("B\nBecause dogs bark.", "B"),
    ("dog", "B"), ("Dog.", "B"), ("I think it is a fish", "C"),  # option text when no letter
    ("A dog", "B"),  # "A" as an article is not option A
    ("E", None), ("", None), ("cat or dog", None), ("no idea", None), ("The answer is a bird", None),
])
def test_parse_letter(output, letter):
    assert parse_letter(output, ["cat", "dog", "fish"]) == letter


@pytest.mark.parametrize("output, answer", [
    ("Yes", "yes"), ("yes.", "yes"), ("No", "no"), ("Y", "yes"), ("n", "no"), ("Yes, there is a dog.", "yes"),
    ("No, there is not.", "no"), ("There is a dog.", None), ("", None), ("maybe", None),
])
def test_parse_yes_no_as_lmms_eval_mme(output, answer):
    assert parse_yes_no(output) == answer


# ---------------------------------------------------------------- metrics


@pytest.mark.parametrize("text, normal", [
    ("two", "2"), ("Two dogs.", "2 dogs"), ("a dog", "dog"), ("The Cat", "cat"), ("an apple", "apple"),
    ("dont", "don't"), ("isnt", "isn't"), ("don't", "don't"), ("yes!", "yes"), ("3.5", "3.5"), ("1,000", "1000"),
    ("black-and-white", "black and white"), ("t - shirt", "t shirt"), ("man's hat", "man 's hat"),
    (" Red\n", "red"), ("none", "0"),
])
def test_vqa_normalize_matches_the_official_rules(text, normal):
    assert vqa_normalize(text) == normal


def test_vqa_accuracy_is_the_leave_one_out_mean():
    others = ["x"] * 10
    assert vqa_accuracy("two", ["2"] * 4 + others[:6]) == pytest.approx(1.0)
    assert vqa_accuracy("2", ["two"] * 3 + others[:7]) == pytest.approx(0.9)  # 3 x 2/3 + 7 x 1, over 10
    assert vqa_accuracy("A dog.", ["dog", "dog"] + others[:8]) == pytest.approx(0.6)  # 2 x 1/3 + 8 x 2/3
    assert vqa_accuracy("dog", ["dog"] + others[:9]) == pytest.approx(0.3)  # 9 x 1/3
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0
    assert vqa_accuracy("dog", [{"answer": "dog"}] * 10) == 1.0
    assert vqa_accuracy("dog", []) == 0.0


def test_exact_match_ignores_case_and_punctuation_but_not_spaces_as_lmms_eval():
    assert exact_match("Yes.", "yes") == 1.0 and exact_match("T-shirt", "tshirt") == 1.0
    assert exact_match(" T-shirt ", "tshirt") == 0.0 and exact_match("yes .", "yes") == 0.0
    assert exact_match("left side", "left") == 0.0
    assert exact_match_lenient(" T-shirt ", "tshirt") == 1.0 and exact_match_lenient("yes .", "yes") == 1.0


def test_vqa_normalize_removes_at_most_32_periods_as_lmms_eval():
    # lmms-eval hands re.UNICODE (32) to re.sub as its count
    assert vqa_normalize("a." * 40) == "a" * 32 + "a." * 8


def test_result_score_counts_errors_as_wrong():
    assert common.result_score({"score": 1.0, "error": "no image"}) == 0.0
    assert common.result_score({"score": 0.5, "error": None}) == 0.5
    assert common.percent([1.0, 0.0, 0.5, 0.5]) == 50.0 and common.percent([]) == 0.0
