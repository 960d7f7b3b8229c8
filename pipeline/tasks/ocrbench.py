"""OCRBench: 1,000 OCR questions, points out of 1000 (lmms-eval ``ocrbench``).

Prompt: the question alone. A sample scores 1 when any gold answer is a substring of
the output, both lower-cased with newlines as spaces; for ``dataset == "HME100k"``
(handwritten formulas) all spaces and newlines are removed first and only the output is
lower-cased, as lmms-eval does. Metrics: ``points`` (the sum), ``score`` = points scaled
to 1000 questions (equal to ``points`` on the full set), and points per ``question_type``.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.tasks import register_task
from pipeline.tasks.common import DatasetTask, image_sample, result_score


class OCRBench(DatasetTask):
    name = "ocrbench"
    hub = (("echo840/OCRBench", None, "test"),)
    max_new_tokens = 128

    def sample(self, row, *, media_root=None):
        answers = row["answer"] if isinstance(row["answer"], (list, tuple)) else [row["answer"]]
        return image_sample(
            self, str(row["_index"]), row["question"].strip(), [row.get("image")], answer=[str(a) for a in answers],
            meta={"dataset": row["dataset"], "question_type": row["question_type"]}, root=media_root,
        )

    def parse(self, output, sample):
        return (output or "").lower().strip()

    def score(self, parsed, sample):
        return ocr_match(parsed or "", sample.answer, sample.meta["dataset"])

    def aggregate(self, results):
        by_type = defaultdict(float)
        for r in results:
            by_type[r["meta"]["question_type"]] += result_score(r)
        points = sum(by_type.values())
        return {"score": 1000.0 * points / max(len(results), 1), "points": points, **by_type}


def ocr_match(prediction: str, answers: list[str], dataset: str) -> float:
    """1.0 when any answer is a substring of the prediction (lmms-eval's rules, see module)."""
    if dataset == "HME100k":
        squash = lambda s: s.strip().replace("\n", " ").replace(" ", "")  # noqa: E731
        pred = squash(prediction.lower())
        return float(any(squash(a) in pred for a in answers))
    pred = prediction.lower().strip().replace("\n", " ")
    return float(any(a.lower().strip().replace("\n", " ") in pred for a in answers))


register_task(OCRBench())
