"""What a sweep logs for one grid point, computed from the pipeline's output rows.

Per task ``<task>/<name>`` (the task's own metrics, ``score`` first among them, and the
pipeline's means from ``pipeline.evaluate.summarize``), the same means pooled over all
tasks' samples without a prefix, and, against the unpruned baseline:

    <task>/relative   100 * score / baseline score (left out when the baseline scored 0)
    avg_relative      the mean of <task>/relative over the tasks that have one: the paper's
                      "Avg. %"; relative_tasks says how many tasks it averages
    prefill_speedup, ttft_speedup   baseline's mean prefill_s (ttft_s) / this point's

Timings are the infer stage's per-batch values (``pipeline.infer``), and the infer stage
runs each config's rows as their own batches, so they are this config's alone even though
all configs share one Ray job. The vision encoder and the decoder layers below a point's
first pruning layer run once per batch for all its points (pipeline/prefix.py); their
measured seconds are counted into every point's timings, and ``shared_s`` (the mean per
batch) says how many of a point's seconds those are. ``samples_per_second`` is likewise this config's: its
samples divided by the wall time of its own ``generate`` calls (each row carries its
batch's ``generate_s`` and ``batch_size``); video decoding, which all configs share, and
Ray's scheduling are not in it. ``peak_memory_mb`` is the largest value any of the
config's batches reported (on CPU, the actor process's peak RSS so far, which only grows).

Theoretical FLOPs (``pruning.flops.prefill_flops``) are counted per sample from what the
model really saw: ``prompt_tokens`` (the prompt's length with its visual tokens, padding
left out), ``visual_tokens_before`` and ``visual_tokens_after`` summed over the sample's
spans, the config's layer K (0 for the baseline, which removes nothing), and the vision
tower's patches as ``visual_tokens_before * merge`` (pruning.flops' default). They are
summed over the samples (``total_flops``), so attention's quadratic term is counted per
sample rather than at a mean length:

    prefill_tflops            mean prefill TFLOPs per sample after pruning (vision included)
    prefill_tflops_unpruned   the same without pruning
    flops_speedup             prefill_tflops_unpruned / prefill_tflops
"""

from __future__ import annotations

import json
import math
import re
from typing import Mapping, Sequence

from pruning import PruningConfig
from pruning.flops import prefill_flops, total_flops

TIMINGS = ("ttft_s", "prefill_s", "decode_s_per_token", "select_s", "shared_s")


def point_metrics(results: Mapping[str, tuple[Mapping[str, float], Sequence[dict]]], model_config,
                  point: PruningConfig) -> dict[str, float]:
    """Every metric of one grid point but the relative ones: ``<task>/...`` per task
    (``results`` maps task names to the point's (``pipeline.evaluate.summarize``
    metrics, output rows)), then pooled."""
    out = {}
    for task, (summary, rows) in results.items():
        metrics = task_metrics(summary, rows, model_config, point)
        out.update({f"{task}/{k}": v for k, v in metrics.items()})
    out.update(pooled_metrics([r for _, rows in results.values() for r in rows], model_config, point))
    return out


def task_metrics(metrics: Mapping[str, float], rows: Sequence[dict], model_config,
                 point: PruningConfig) -> dict[str, float]:
    """One task's metrics for one point: ``summarize``'s, with this config's own
    throughput and the FLOPs added."""
    out = {_metric_name(k): float(v) for k, v in metrics.items()}
    out.update(samples_per_second=throughput(rows), **flops(rows, model_config, point))
    return out


def pooled_metrics(rows: Sequence[dict], model_config, point: PruningConfig) -> dict[str, float]:
    """Samples, errors, tokens, timings, throughput and FLOPs over every task's rows."""
    ok = [r for r in rows if not r["error"]]
    out = {"samples": float(len(rows)), "errors": float(len(rows) - len(ok)),
           "visual_tokens_before": _mean(ok, "visual_tokens_before"),
           "visual_tokens_after": _mean(ok, "visual_tokens_after"),
           "peak_memory_mb": max([r["peak_memory_mb"] or 0.0 for r in ok], default=0.0),
           "samples_per_second": throughput(rows)}
    out.update({key: _mean(ok, key) for key in TIMINGS})
    out.update(flops(rows, model_config, point))
    return out


def relative_metrics(metrics: Mapping[str, float], baseline: Mapping[str, float],
                     tasks: Sequence[str]) -> dict[str, float]:
    """The point's scores and speed against the baseline's (see the module docstring)."""
    out = {}
    for task in tasks:
        base = baseline.get(f"{task}/score", 0.0)
        if base > 0 and f"{task}/score" in metrics:
            out[f"{task}/relative"] = 100.0 * metrics[f"{task}/score"] / base
    relative = [out[f"{t}/relative"] for t in tasks if f"{t}/relative" in out]
    if relative:
        out["avg_relative"] = sum(relative) / len(relative)
    out["relative_tasks"] = float(len(relative))
    for key, name in (("prefill_s", "prefill_speedup"), ("ttft_s", "ttft_speedup")):
        if metrics.get(key) and baseline.get(key):
            out[name] = baseline[key] / metrics[key]
    return out


def throughput(rows: Sequence[dict]) -> float:
    """Samples per second of this config's own generate calls (see the module docstring)."""
    ok = [r for r in rows if not r["error"] and r.get("generate_s") is not None]
    seconds = sum(r["generate_s"] / max(r["batch_size"] or 1, 1) for r in ok)
    return len(ok) / seconds if seconds else 0.0


def flops(rows: Sequence[dict], model_config, point: PruningConfig) -> dict[str, float]:
    """Mean theoretical prefill FLOPs per sample, with and without pruning (see above)."""
    per_sample = [prefill_flops(model_config, seq_len=int(r["prompt_tokens"]),
                                visual_tokens=int(r["visual_tokens_before"]),
                                kept_visual_tokens=int(r["visual_tokens_after"]), layer=point.layer or 0,
                                stages=_stages(r, point))
                  for r in rows if not r["error"] and r.get("prompt_tokens")]
    if not per_sample:
        return {}
    total = total_flops(per_sample)
    return {"prefill_tflops": total["total_pruned"] / len(per_sample) / 1e12,
            "prefill_tflops_unpruned": total["total_unpruned"] / len(per_sample) / 1e12,
            "flops_speedup": total["speedup"]}


def _stages(row: dict, point: PruningConfig):
    """(layer, visual tokens left) per stage of a progressive point, from the row's span grids
    (each stage's count is the config's for the span's size); None for one stage."""
    if not point.stages:
        return None
    spans = row.get("spans") or []
    sizes = [math.prod(span["grid"]) for span in (json.loads(spans) if isinstance(spans, str) else spans)]
    kept = int(row["visual_tokens_after"])  # what the row measured is the last stage's count
    counts = [max(kept, sum(point.num_retain_for(n, i) for n in sizes)) for i in range(len(point.stages) - 1)]
    return list(zip(point.prune_layers, counts + [kept]))


def _mean(rows: Sequence[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None and not _is_nan(r[key])]
    return sum(values) / len(values) if values else 0.0


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _metric_name(name: str) -> str:
    """``name`` in the characters MLflow allows in a metric key."""
    return re.sub(r"[^\w\-. /]", "_", str(name))
