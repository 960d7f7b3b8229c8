"""SEED-Bench: four-way multiple choice (lmms-eval ``seedbench``).

Prompt: the question, options "A. {choice_a}" .. "D. {choice_d}" one per line, then the
letter instruction. ``image`` is a list: every image goes to the model, as lmms-eval
passes them (one for image questions, several frames for ``data_type == "video"``).
Scoring as lmms-eval's ``seed_process_result`` / ``seed_aggregation_result``: the first
character of the stripped output, compared with the letter case-insensitively (so
"(C)" is wrong; the lenient scoring reads it). ``score`` (all rows) and the accuracy
per ``data_type`` (``image``, ``video``), in percent. Generation: the model's default
budget, stop at "ASSISTANT:" (lmms-eval seedbench.yaml names no max_new_tokens).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import DatasetTask, image_sample, mc_prompt, parse_letter, percent, result_score


class SEEDBench(DatasetTask):
    name = "seedbench"
    required_text = ("question", "choice_a", "choice_b", "answer")
    hub = (("lmms-lab/SEED-Bench", None, "test"),)
    max_new_tokens = None
    until = ("ASSISTANT:",)

    def sample(self, row, *, media_root=None):
        choices = [row[f"choice_{c}"] for c in "abcd"]
        images = row.get("image")
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        return image_sample(
            self, str(row["question_id"]), mc_prompt(row["question"], choices), images, answer=row["answer"],
            meta={"question_id": row["question_id"], "data_type": row.get("data_type", "image"),
                  "choices": [str(c) for c in choices]}, root=media_root,
        )

    def parse(self, output, sample):
        text = (output or "").strip()
        return text[0] if len(text) > 1 else text

    def score(self, parsed, sample):
        return float(parsed is not None and parsed.lower().strip() == str(sample.answer).lower().strip())

    def parse_lenient(self, output, sample):
        return parse_letter(output, sample.meta["choices"])

    def aggregate(self, results):
        by_type: dict[str, list[float]] = {}
        for r in results:
            by_type.setdefault(r["meta"]["data_type"], []).append(result_score(r))
        return {"score": percent([result_score(r) for r in results]),
                **{t: percent(s) for t, s in sorted(by_type.items())}}


register_task(SEEDBench())
