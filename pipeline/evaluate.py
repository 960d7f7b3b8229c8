"""Evaluate a (pruned) VLM on one benchmark with Ray Data.

    python -m pipeline.evaluate --task mme --data PATH_OR_HUB_ID --model tiny:qwen2_vl \\
        --method vlm_pruner --pruning-rate 0.889 --out out/mme

read -> decode (CPU tasks) -> infer (actor pool, one model per actor) -> score -> write
(pipeline.job): the workers read the benchmark's rows a range at a time and store every
answered row under ``--out``/rows as they go; at the end ``predictions.parquet`` (one
row per input sample: id, prompt, output, parsed answer, score, visual tokens
before/after, timings, error) and ``summary.json`` (the task's metrics, samples,
errors, throughput, and the scoring used) are built from the stored rows. Run it again
with the same ``--out`` after an interruption and it answers only what is missing.
Starts a local Ray unless RAY_ADDRESS points at a cluster.

Scoring (``--scoring``, ``pipeline.tasks.scoring``): ``lmms_eval`` (default) scores as
lmms-eval 0.7.3 does, task by task; ``lenient`` also reports our tolerant parsers'
metrics, under ``lenient/<name>``.

``evaluate`` runs several tasks and pruning configs over the same samples in one Ray
job: each sample is read and decoded once, then answered under every config, and the
actors' model is loaded once for all of them.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pyarrow.parquet as pq

from pipeline import cli
from pipeline import rows as contract
from pipeline.job import BATCHES_PER_BLOCK, PipelineError, Plan, Resources, init_ray, run  # noqa: F401
from pipeline.models import model_config
from pipeline.sources import TaskSource, task_source
from pipeline.tasks import get_task
from pipeline.tasks._media import MISSING_VIDEO
from pipeline.tasks.scoring import LMMS_EVAL, SCORINGS, check_scoring, scoring_label, task_metrics
from pruning import PruningConfig

log = logging.getLogger("pipeline.evaluate")

# What predictions.parquet holds per sample (pipeline.rows.SCORED).
OUTPUT_COLUMNS = contract.names(contract.SCORED)


@dataclass
class Result:
    """One task under one config: its metrics and where its predictions are."""

    task: str
    config: PruningConfig
    metrics: dict
    predictions: str  # parquet: one row per sample, in the benchmark's order
    seconds: float

    def rows(self) -> list[dict]:
        """The predictions as dicts (read from the file: call it for small runs)."""
        return pq.read_table(self.predictions).to_pylist()

    @property
    def errors(self) -> int:
        return int(self.metrics.get("errors", 0))


def evaluate(sources: Sequence[TaskSource], model: str, configs: Sequence[PruningConfig], out,
             resources: Resources = Resources(), *, keep_errors: bool = True,
             scoring: str = LMMS_EVAL) -> dict[str, list[Result]]:
    """Answer every source's rows under every config, storing them under ``out``/rows;
    ``{task: [Result per config]}``, each with ``out``/predictions/<task>/<i>.parquet
    (``predictions.parquet`` itself for one task and one config). ``scoring``: a checked
    ``pipeline.tasks.scoring`` name."""
    import ray

    out = Path(out)
    plan = Plan(model, tuple(sources), tuple(configs), str(out / "rows"), resources, keep_errors, scoring=scoring)
    progress = run(plan)

    @ray.remote(num_cpus=0.5)
    def finish(plan: Plan, source: TaskSource, point: int, count: int, path: str, answered: int,
               seconds: float) -> dict:
        table = plan_rows(plan, source, point, count)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        rows = table.to_pylist()
        missing = [r for r in rows if r["error"] and r["error"].startswith(MISSING_VIDEO)][:1]
        return summarize(get_task(source.task), rows, seconds, answered=answered, scoring=plan.scoring), missing

    single = len(sources) == 1 and len(configs) == 1
    refs = {}
    for source in sources:
        for point in range(len(configs)):
            path = out / "predictions.parquet" if single else out / "predictions" / source.name / f"{point}.parquet"
            refs[source.name, point] = (path, finish.remote(
                plan, source, point, progress.counts[source.name], str(path),
                progress.written.get((source.name, point), 0), progress.seconds))
    results = {}
    for source in sources:
        results[source.name] = []
        for p in range(len(configs)):
            path, ref = refs[source.name, p]
            metrics, missing = ray.get(ref)
            results[source.name].append(Result(source.name, configs[p], metrics, str(path), progress.seconds))
        warn_if_videos_missing(source.name, int(metrics["samples"]), int(metrics.get("missing_videos", 0)),
                               missing[0] if missing else None)
    return results


def plan_rows(plan: Plan, source, point: int, count: int):
    """The stored rows of ``source`` under point ``point``, one per input row in order; a
    row the store lacks (never answered: the job was cut short) is an error row."""
    from pipeline.job import stored

    table = stored(plan, source, point, count)
    if table.num_rows == count:
        return table
    have = set(table["index"].to_pylist())
    lost = [{"index": i, "task": source.name, "id": None, "point": point, "error": "lost in the pipeline",
             "score": 0.0} for i in range(count) if i not in have]
    import pyarrow as pa

    merged = pa.concat_tables([table, contract.table(lost, contract.SCORED)])
    return merged.sort_by("index")


def read_samples(task_name: str, data: str, *, limit: Optional[int] = None,
                 media_root: Optional[str] = None) -> list:
    """The task's samples read in this process, in the benchmark's order (tests, the
    plain-loop benchmark; the pipeline itself reads on its workers). Warns as
    :func:`evaluate` does when most video rows have no video file."""
    source = task_source(task_name, data, limit=limit, media_root=media_root)
    samples = [sample for _, sample in source.samples(0, source.count())]
    missing = [s for s in samples if s.error and s.error.startswith(MISSING_VIDEO)]
    warn_if_videos_missing(task_name, len(samples), len(missing),
                           {"id": missing[0].id, "error": missing[0].error} if missing else None)
    return samples


def warn_if_videos_missing(task_name: str, samples: int, missing: int, example: Optional[dict]) -> None:
    """One warning when most of a task's video rows found no video file: the rows were
    read, so the videos are elsewhere than where they were looked for, and a missing or
    wrong ``--media-root`` is the usual cause. Each row keeps its own error."""
    if get_task(task_name).modality != "video" or 2 * missing <= samples or example is None:
        return
    log.warning("%s: %d of %d video rows have no video file (row %s: %s). If the videos are elsewhere, pass "
                "--media-root DIR: a folder holding them as the spec lays them out, or a download of the hub "
                "repository with its zips unzipped in place; lmms-eval's are found in $HF_HOME (set HF_HOME to "
                "the one lmms-eval used).", task_name, missing, samples, example["id"], example["error"])


def summarize(task, rows: list[dict], seconds: float, *, answered: Optional[int] = None,
              scoring: str = LMMS_EVAL) -> dict:
    """The task's metrics (``scoring``'s: ``pipeline.tasks.scoring.task_metrics``) plus
    samples, errors, throughput (``answered`` rows, default all, in ``seconds``) and mean
    timings."""
    def parsed(value):
        return json.loads(value) if value else None

    scored = [{**r, "answer": json.loads(r["answer"]) if r["answer"] else None,
               "meta": json.loads(r["meta"] or "{}"), "parsed": parsed(r["parsed"]),
               "lenient_parsed": parsed(r.get("lenient_parsed"))} for r in rows]
    metrics = task_metrics(task, scored, scoring)
    ok = [r for r in rows if not r["error"]]

    def mean(key):
        values = [r[key] for r in ok if r.get(key) is not None]
        return sum(values) / len(values) if values else 0.0

    answered = len(rows) if answered is None else answered
    metrics.update(samples=len(rows), errors=len(rows) - len(ok),
                   missing_videos=sum(1 for r in rows if r["error"] and r["error"].startswith(MISSING_VIDEO)),
                   samples_per_second=answered / seconds if seconds else 0.0,
                   visual_tokens_before=mean("visual_tokens_before"),
                   visual_tokens_after=mean("visual_tokens_after"),
                   ttft_s=mean("ttft_s"), prefill_s=mean("prefill_s"),
                   decode_s_per_token=mean("decode_s_per_token"), select_s=mean("select_s"),
                   shared_s=mean("shared_s"),
                   peak_memory_mb=max([r["peak_memory_mb"] or 0.0 for r in ok], default=0.0))
    return metrics


def print_summary(task_name: str, result: Result) -> None:
    m = result.metrics
    print(f"\n{task_name} | {result.config.method} "
          f"{'' if result.config.pruning_rate is None else f'{result.config.pruning_rate:.1%}'}")
    for key in sorted(m):
        print(f"  {key:<22} {m[key]:.4g}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="benchmark name (see pipeline.tasks.list_tasks())")
    parser.add_argument("--data", required=True, help="local directory in the benchmark's layout, or a hub id")
    parser.add_argument("--model", default="tiny:qwen2_vl", help="local path, hub id or tiny:<family>")
    cli.add_pruning_options(parser)
    parser.add_argument("--out", required=True, help="output directory (predictions.parquet, summary.json)")
    parser.add_argument("--limit", type=int, help="first N samples only")
    parser.add_argument("--media-root", help="where video/image files live (default: the data directory); videos "
                                             "are looked for under it in the spec's and the hub repository's "
                                             "layouts, then in lmms-eval's ($HF_HOME); see README")
    cli.add_resource_options(parser, batch_size=4, frames=32)
    parser.add_argument("--max-new-tokens", type=int,
                        help="generation budget instead of the task's own (smoke tests; scores are then not the "
                             "benchmark's)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="answer again the samples stored with an error (e.g. media that were unavailable)")
    parser.add_argument("--scoring", default=LMMS_EVAL, choices=SCORINGS,
                        help="lmms_eval (default): lmms-eval 0.7.3's prompts, generation and scoring; "
                             "lenient: also our tolerant parsers' metrics, as lenient/<name>")
    args = parser.parse_args(argv)

    try:  # refuse a bad option before any work (and before Ray starts)
        cli.check(args)
        get_task(args.task)
        config = cli.pruning_config(args).check_against(model_config(args.model))
        cli.check_data(args.data)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    scoring = check_scoring(args.scoring)
    source = task_source(args.task, args.data, limit=args.limit, media_root=args.media_root,
                         max_new_tokens=args.max_new_tokens)
    resources = Resources(actors=args.actors, num_gpus=args.num_gpus, batch_size=args.batch_size,
                          frames=args.frames, max_pixels=args.max_pixels, dtype=args.dtype,
                          sample_timeout_s=args.sample_timeout)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    try:
        ((result,),) = evaluate([source], args.model, [config], out, resources,
                                keep_errors=not args.retry_errors, scoring=scoring).values()
    except PipelineError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    (out / "summary.json").write_text(json.dumps({"task": args.task, "config": config.to_dict(),
                                                  "scoring": scoring_label(scoring), "metrics": result.metrics},
                                                 indent=2))
    print_summary(args.task, result)
    print(f"  {'scoring':<22} {scoring_label(scoring)}")
    print(f"\nwrote {result.predictions} ({int(result.metrics['samples'])} rows, {result.errors} errors)")


if __name__ == "__main__":
    main()
