"""POPE: object-hallucination yes/no questions (lmms-eval ``pope``).

Prompt: question + short-answer line. The output is read with the MME yes/no parser
(lmms-eval compares the lower-cased output to "yes"/"no" exactly; ours also accepts
"Yes." and "Yes, there is ..."). Metrics, "yes" the positive class, in percent (0-100):
``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio`` (share of "yes"
predictions) and ``f1/<category>``; ``score`` = F1 x 100. As in lmms-eval, an output
that is neither yes nor no is wrong for accuracy and counts in neither precision nor recall.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.tasks import register_task
from pipeline.tasks.common import SHORT_ANSWER, DatasetTask, image_sample, parse_yes_no


class POPE(DatasetTask):
    name = "pope"
    hub = (("lmms-lab/POPE", None, "test"), ("lmms-lab/POPE", "Full", "adversarial"))
    max_new_tokens = 16

    def sample(self, row, *, media_root=None):
        category = row.get("category") or ""
        return image_sample(
            self, f"{category}/{row['question_id']}", f"{row['question'].strip()}\n{SHORT_ANSWER}",
            [row.get("image")], answer=row["answer"].lower().strip(),
            meta={"question_id": row["question_id"], "category": category}, root=media_root,
        )

    def parse(self, output, sample):
        return parse_yes_no(output)

    def aggregate(self, results):
        pairs = [(None if r.get("error") else r["parsed"], r["answer"]) for r in results]
        metrics = binary_metrics(pairs)
        by_category = defaultdict(list)
        for r, pair in zip(results, pairs):
            by_category[r["meta"].get("category") or "all"].append(pair)
        if len(by_category) > 1:
            metrics.update({f"f1/{c}": binary_metrics(p)["f1"] for c, p in sorted(by_category.items())})
        metrics["score"] = metrics["f1"]
        return metrics


def binary_metrics(pairs: list[tuple]) -> dict[str, float]:
    """(predicted, gold) "yes"/"no" pairs -> accuracy, precision, recall, F1, yes ratio, x 100."""
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = max(len(pairs), 1)
    return {"accuracy": 100.0 * sum(p == g for p, g in pairs) / n, "precision": 100.0 * precision,
            "recall": 100.0 * recall, "f1": 100.0 * f1, "yes_ratio": 100.0 * sum(p == "yes" for p, _ in pairs) / n}


register_task(POPE())
