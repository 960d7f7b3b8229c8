"""POPE: object-hallucination yes/no questions (lmms-eval ``pope``; ``pope_adv``,
``pope_pop``, ``pope_random`` for the splits).

Prompt: question + short-answer line. lmms-eval compares the lower-cased, stripped
output with "yes"/"no" exactly ("Yes." is neither); the lenient scoring reads it with
the MME yes/no parser instead. Metrics as lmms-eval's ``pope_aggregate_*``, "yes" the
positive class, in percent (0-100; lmms-eval reports 0-1): ``accuracy``, ``precision``,
``recall``, ``f1``, and ``yes_ratio`` (the share of "yes" among the gold answers, as
lmms-eval computes it); an output that is neither yes nor no is wrong for accuracy and
counts in neither precision nor recall. ``score`` = F1 x 100. Per split (the
``category`` column: adversarial, popular, random) the same five as
``<split>/<metric>``, what lmms-eval's per-split tasks report.
Generation: 128 new tokens, stop at a blank line (lmms-eval pope.yaml).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import DEFAULT_UNTIL, SHORT_ANSWER, DatasetTask, image_sample, parse_yes_no


class POPE(DatasetTask):
    name = "pope"
    required_text = ("question", "answer")
    hub = (("lmms-lab/POPE", None, "test"), ("lmms-lab/POPE", "Full", "adversarial"))
    max_new_tokens = 128
    until = DEFAULT_UNTIL

    def sample(self, row, *, media_root=None):
        category = row.get("category") or ""
        return image_sample(
            self, f"{category}/{row['question_id']}", f"{row['question'].strip()}\n{SHORT_ANSWER}",
            [row.get("image")], answer=row["answer"].lower().strip(),
            meta={"question_id": row["question_id"], "category": category}, root=media_root,
        )

    def parse(self, output, sample):
        return (output or "").lower().strip()

    def parse_lenient(self, output, sample):
        return parse_yes_no(output)

    def aggregate(self, results):
        pairs = [(None if r.get("error") else r["parsed"], r["answer"]) for r in results]
        metrics = binary_metrics(pairs)
        by_split: dict[str, list] = {}
        for r, pair in zip(results, pairs):
            if r["meta"].get("category"):
                by_split.setdefault(r["meta"]["category"], []).append(pair)
        for split, split_pairs in sorted(by_split.items()):
            metrics.update({f"{split}/{k}": v for k, v in binary_metrics(split_pairs).items()})
        metrics["score"] = metrics["f1"]
        return metrics


def binary_metrics(pairs: list[tuple]) -> dict[str, float]:
    """(predicted, gold) pairs -> accuracy, precision, recall, F1, yes ratio, x 100,
    computed as lmms-eval's pope_aggregate_* compute them (then scaled)."""
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * (precision * recall) / (precision + recall) if precision + recall else 0.0
    gold_yes, gold_no = sum(g == "yes" for _, g in pairs), sum(g == "no" for _, g in pairs)
    accuracy = sum(1.0 if p == g else 0.0 for p, g in pairs) / len(pairs) if pairs else 0.0
    yes_ratio = gold_yes / (gold_yes + gold_no) if gold_yes + gold_no else 0.0
    return {"accuracy": 100.0 * accuracy, "precision": 100.0 * precision, "recall": 100.0 * recall,
            "f1": 100.0 * f1, "yes_ratio": 100.0 * yes_ratio}


register_task(POPE())
