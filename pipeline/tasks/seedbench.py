"""SEED-Bench: four-way multiple choice (lmms-eval ``seedbench``).

Prompt: the question, options "A. {choice_a}" .. "D. {choice_d}" one per line, then the
letter instruction. ``image`` is a list: every image goes to the model, as lmms-eval
passes them (one for image questions, several frames for ``data_type == "video"``).
Metric as lmms-eval: the first character of the stripped output must equal the letter.
``score`` (all rows), ``image`` and ``video`` accuracies, in percent.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.tasks import register_task
from pipeline.tasks.common import DatasetTask, image_sample, mc_prompt, percent, result_score


class SEEDBench(DatasetTask):
    name = "seedbench"
    hub = (("lmms-lab/SEED-Bench", None, "test"),)
    max_new_tokens = 16

    def sample(self, row, *, media_root=None):
        choices = [row[f"choice_{c}"] for c in "abcd"]
        images = row.get("image")
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        return image_sample(
            self, str(row["question_id"]), mc_prompt(row["question"], choices), images, answer=row["answer"],
            meta={"question_id": row["question_id"], "data_type": row.get("data_type", "image")}, root=media_root,
        )

    def parse(self, output, sample):
        text = (output or "").strip()
        return text[0] if text else None

    def aggregate(self, results):
        by_type = defaultdict(list)
        for r in results:
            by_type[r["meta"]["data_type"]].append(result_score(r))
        return {"score": percent([result_score(r) for r in results]),
                **{t: percent(s) for t, s in sorted(by_type.items())}}


register_task(SEEDBench())
