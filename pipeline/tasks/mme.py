"""MME: yes/no questions, two per image; scored per category as acc + acc+ (lmms-eval ``mme``).

Prompt: the question without its own " Please answer yes or no.", then the short-answer
line. Output read by ``extract.yes_no`` ("yes", "no" or "other"). Metrics, as
lmms-eval's ``mme_aggregate_results``: per category the mean over its images of
``acc x 100 + acc+ x 100`` (acc+: both questions of the image right; ``<category>``,
with ``<category>/acc`` and ``<category>/acc_plus``), ``perception`` (the 10 perception
categories, max 2000), ``cognition`` (every other category; the 4 of MME, max 800), and
``score`` = perception + cognition (max 2800), the total the paper's tables use.
Generation: 16 new tokens, stop at a blank line (lmms-eval mme.yaml).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import DEFAULT_UNTIL, SHORT_ANSWER, DatasetTask, image_sample, parse_yes_no, result_score
from pipeline.tasks.extract import yes_no

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MME(DatasetTask):
    name = "mme"
    required_text = ("question", "answer", "category")
    hub = (("lmms-lab/MME", None, "test"),)
    max_new_tokens = 16
    until = DEFAULT_UNTIL

    def sample(self, row, *, media_root=None):
        question = row["question"].strip().replace(" Please answer yes or no.", "")
        return image_sample(
            self, f"{row['_index']}:{row['question_id']}", f"{question}\n{SHORT_ANSWER}", [row.get("image")],
            answer=row["answer"].lower().strip().replace(".", ""),
            meta={"question_id": row["question_id"], "category": row["category"]}, root=media_root,
        )

    def parse(self, output, sample):
        return yes_no((output or "").strip())

    def parse_lenient(self, output, sample):
        return parse_yes_no(output)

    def aggregate(self, results):
        # category -> image (question_id) -> per-question scores, in order of appearance
        by_image: dict[str, dict[str, list[float]]] = {}
        for r in results:
            images = by_image.setdefault(r["meta"]["category"], {})
            images.setdefault(r["meta"]["question_id"], []).append(result_score(r))
        metrics = {}
        for category, images in by_image.items():
            total = 0.0
            for scores in images.values():
                total += sum(scores) / len(scores) * 100.0 + (sum(scores) == len(scores)) * 100.0
            metrics[category] = total / len(images)
            metrics[f"{category}/acc"] = 100.0 * sum(map(sum, images.values())) / sum(map(len, images.values()))
            metrics[f"{category}/acc_plus"] = 100.0 * sum(sum(s) == len(s) for s in images.values()) / len(images)
        metrics["perception"] = sum(metrics[c] for c in by_image if c in PERCEPTION)
        metrics["cognition"] = sum(metrics[c] for c in by_image if c not in PERCEPTION)
        metrics["score"] = metrics["perception"] + metrics["cognition"]
        return metrics


register_task(MME())
