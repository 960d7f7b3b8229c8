"""OCRBench: 1,000 OCR questions, points out of 1000 (lmms-eval ``ocrbench``).

Prompt: the question alone (stripped). A sample scores 1 when a gold answer is a
substring of the output, as lmms-eval's ``ocrbench_process_results`` decides it: for
``dataset == "HME100k"`` (handwritten formulas) after removing every space and newline
from both, case-sensitively; otherwise with full-width ASCII folded to ASCII (and the
ideographic space to a space), both lower-cased and stripped, newlines as spaces.
Metrics: ``score`` = the points (lmms-eval's Final Score; its ``ocrbench_accuracy`` is
that over 1000), ``text_recognition`` (the six recognition types' subtotal) and the
points of each ``question_type``. Generation: 128 new tokens, stop at a blank line
(lmms-eval ocrbench.yaml).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import DEFAULT_UNTIL, DatasetTask, image_sample, result_score

RECOGNITION = ("Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
               "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition")


class OCRBench(DatasetTask):
    name = "ocrbench"
    required_text = ("question",)
    hub = (("echo840/OCRBench", None, "test"),)
    max_new_tokens = 128
    until = DEFAULT_UNTIL

    def sample(self, row, *, media_root=None):
        answers = row["answer"] if isinstance(row["answer"], (list, tuple)) else [row["answer"]]
        return image_sample(
            self, str(row["_index"]), row["question"].strip(), [row.get("image")], answer=[str(a) for a in answers],
            meta={"dataset": row["dataset"], "question_type": row["question_type"]}, root=media_root,
        )

    def parse(self, output, sample):
        return (output or "").strip()

    def score(self, parsed, sample):
        return ocr_match(parsed or "", sample.answer, sample.meta["dataset"])

    def aggregate(self, results):
        by_type: dict[str, float] = {}
        for r in results:
            by_type[r["meta"]["question_type"]] = by_type.get(r["meta"]["question_type"], 0.0) + result_score(r)
        recognition = sum(by_type.get(t, 0.0) for t in RECOGNITION)
        points = recognition + sum(v for t, v in by_type.items() if t not in RECOGNITION)
        return {"score": points, "text_recognition": recognition, **by_type}


def fold_fullwidth(text: str) -> str:
    """Full-width ASCII (U+FF01..U+FF5E) to ASCII and U+3000 to a space, nothing else."""
    return "".join(chr(ord(c) - 0xFEE0) if 0xFF01 <= ord(c) <= 0xFF5E else " " if c == "\u3000" else c
                   for c in text)


def ocr_match(prediction: str, answers: list[str], dataset: str) -> float:
    """1.0 when any answer is a substring of the prediction (lmms-eval's rules, see module)."""
    if dataset == "HME100k":
        squash = lambda s: s.strip().replace("\n", " ").replace(" ", "")  # noqa: E731
        return float(any(squash(a) in squash(prediction) for a in answers))
    plain = lambda s: fold_fullwidth(s).lower().strip().replace("\n", " ")  # noqa: E731
    return float(any(plain(a) in plain(prediction) for a in answers))


register_task(OCRBench())
