"""MME: yes/no questions, two per image; scored per category as acc + acc+ (lmms-eval ``mme``).

Prompt: the question without its own " Please answer yes or no.", then the short-answer
line. Metrics: per category ``acc x 100 + acc+ x 100`` (acc+: every question of an image
right), ``perception`` (10 categories, max 2000), ``cognition`` (4, max 800), and
``score`` = perception + cognition (max 2800), the total the paper's tables use.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.tasks import register_task
from pipeline.tasks.common import SHORT_ANSWER, DatasetTask, image_sample, parse_yes_no, result_score

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MME(DatasetTask):
    name = "mme"
    hub = (("lmms-lab/MME", None, "test"),)
    max_new_tokens = 16

    def sample(self, row, *, media_root=None):
        question = row["question"].strip().replace(" Please answer yes or no.", "")
        return image_sample(
            self, f"{row['_index']}:{row['question_id']}", f"{question}\n{SHORT_ANSWER}", [row.get("image")],
            answer=row["answer"].lower().strip().replace(".", ""),
            meta={"question_id": row["question_id"], "category": row["category"]}, root=media_root,
        )

    def parse(self, output, sample):
        return parse_yes_no(output)

    def aggregate(self, results):
        # category -> image (question_id) -> per-question scores
        by_image: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in results:
            by_image[r["meta"]["category"]][r["meta"]["question_id"]].append(result_score(r))
        metrics = {}
        for category, images in by_image.items():
            scores = [s for image in images.values() for s in image]
            acc = 100.0 * sum(scores) / len(scores)
            acc_plus = 100.0 * sum(all(s == 1.0 for s in image) for image in images.values()) / len(images)
            metrics[f"{category}/acc"], metrics[f"{category}/acc_plus"] = acc, acc_plus
            metrics[category] = acc + acc_plus
        metrics["perception"] = sum(metrics.get(c, 0.0) for c in PERCEPTION)
        metrics["cognition"] = sum(metrics.get(c, 0.0) for c in COGNITION)
        metrics["score"] = metrics["perception"] + metrics["cognition"]
        return metrics


register_task(MME())
