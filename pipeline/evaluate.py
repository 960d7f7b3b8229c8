"""Evaluate a (pruned) VLM on one benchmark with Ray Data.

    python -m pipeline.evaluate --task mme --data PATH_OR_HUB_ID --model tiny:qwen2_vl \\
        --method vlm_pruner --pruning-rate 0.889 --out out/mme

read (driver) -> decode (CPU tasks) -> infer (actor pool, one model per actor) -> score
-> one parquet row per input sample (id, prompt, output, parsed answer, score, visual
tokens before/after, timings, error) and a summary (the task's metrics, samples,
errors, throughput). Starts a local Ray unless RAY_ADDRESS points at a cluster.

``evaluate_configs`` runs several pruning configs over the same samples in one Ray
job: videos are decoded once, then each row is fanned out per config, and the actors'
model is loaded once for all of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.models import model_config
from pipeline.stages import DecodeStage, InferStage, ScoreStage, batched_dataset, sample_to_row
from pipeline.tasks import get_task
from pipeline.tasks._media import MISSING_VIDEO
from pruning import PruningConfig

log = logging.getLogger("pipeline.evaluate")

OUTPUT_COLUMNS = ["id", "task", "prompt", "output", "parsed", "answer", "meta", "score",
                  "visual_tokens_before", "visual_tokens_after", "new_tokens", "ttft_s", "prefill_s",
                  "decode_s_per_token", "select_s", "peak_memory_mb", "kept", "error",
                  "spans", "prompt_tokens", "generate_s", "batch_size", "infer_started", "infer_finished"]


DECODE_CPUS = 0.5  # per decode task: two decode while one actor holds a core
# Model batches per block (and so per decode task and per actor task): see batched_dataset.
BATCHES_PER_BLOCK = 4


@dataclass(frozen=True)
class Resources:
    """How the infer stage is spread: actors (one model each), GPUs per actor, batch size."""

    actors: int = 1
    num_gpus: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 4
    frames: int = 32
    max_pixels: Optional[int] = None
    device: Optional[str] = None  # default: cuda when the actor has a GPU, else cpu
    dtype: Optional[str] = None
    threads: Optional[int] = None  # torch CPU threads per actor (default: Ray's, = cpus_per_actor)


@dataclass
class Result:
    config: PruningConfig
    rows: list[dict]
    metrics: dict
    seconds: float

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r["error"])


def init_ray() -> None:
    """Join RAY_ADDRESS's cluster when set, else start a local one (once per process)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING,
                 include_dashboard=False if not os.environ.get("RAY_ADDRESS") else None,
                 log_to_driver=False)


def read_samples(task_name: str, data: str, *, limit: Optional[int] = None,
                 media_root: Optional[str] = None, frames: int = 32) -> list:
    """The task's samples, in the benchmark's order (the driver reads; rows are small).
    ``frames`` is the decode stage's frame count (VideoMME's subtitles follow it)."""
    task = get_task(task_name)
    if media_root is None and Path(data).exists():
        media_root = str(Path(data) if Path(data).is_dir() else Path(data).parent)
    extra = {"num_frames": frames} if task.modality == "video" else {}
    samples = [task.sample(row, media_root=media_root, **extra) for row in task.rows(data, limit=limit)]
    warn_if_videos_missing(task_name, samples)
    return samples


def warn_if_videos_missing(task_name: str, samples: Sequence) -> None:
    """One warning when most of a task's video rows found no video file: the rows were
    read, so the videos are elsewhere than where they were looked for, and a missing or
    wrong ``--media-root`` is the usual cause. Each row keeps its own error."""
    videos = [s for s in samples if s.video]
    missing = [s for s in videos if s.error and s.error.startswith(MISSING_VIDEO)]
    if 2 * len(missing) <= len(videos):
        return
    log.warning("%s: %d of %d video rows have no video file (row %s: %s). If the videos are elsewhere, pass "
                "--media-root DIR: a folder holding them as the spec lays them out, or a download of the hub "
                "repository with its zips unzipped in place; lmms-eval's are found in $HF_HOME (set HF_HOME to "
                "the one lmms-eval used).", task_name, len(missing), len(videos), missing[0].id, missing[0].error)


def evaluate_configs(task_name: str, samples: Sequence, model: str, configs: Sequence[PruningConfig],
                     resources: Resources = Resources()) -> list[Result]:
    """Run every config over ``samples``; one Result per config, rows in input order."""
    return evaluate_tasks({task_name: samples}, model, configs, resources)[task_name]


def evaluate_tasks(samples_by_task: Mapping[str, Sequence], model: str, configs: Sequence[PruningConfig],
                   resources: Resources = Resources()) -> dict[str, list[Result]]:
    """:func:`evaluate_configs` for several tasks in one Ray Data job, so one actor pool
    (the model loaded once per actor) serves every task and config.

    Returns ``{task: [Result per config]}``; each Result's ``seconds`` is the whole job's.
    """
    import ray

    init_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    config_dicts = [c.to_dict() for c in configs]
    base = [sample_to_row(i, task_name, s, config_dicts)
            for task_name, samples in samples_by_task.items() for i, s in enumerate(samples)]

    gpu = resources.num_gpus > 0
    device = resources.device or ("cuda" if gpu else "cpu")
    start = time.perf_counter()
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    actor_cpus = _actor_cpus(resources, cluster_cpus)
    warm_cpu_workers(model, cluster_cpus - resources.actors * actor_cpus)
    ds = batched_dataset(base, resources.batch_size, BATCHES_PER_BLOCK)
    # Stateless stages run as tasks (an instance is a plain callable to Ray Data);
    # the infer stage is a class, so Ray Data runs it as an actor pool. Decoding (media and
    # the model's processor) asks for its own CPU share: with remote arguments unlike the
    # actors', Ray Data does not fuse it into the actor, so the model never waits on it.
    ds = ds.map_batches(DecodeStage(model, resources.frames, resources.max_pixels),
                        batch_size=resources.batch_size, batch_format="pyarrow",
                        num_cpus=DECODE_CPUS)
    ds = ds.map_batches(InferStage, fn_constructor_kwargs={"model": model, "device": device,
                                                           "dtype": resources.dtype,
                                                           "threads": resources.threads},
                        batch_size=resources.batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=resources.actors),
                        num_gpus=resources.num_gpus,
                        num_cpus=actor_cpus)
    ds = ds.map_batches(ScoreStage(), batch_format="pyarrow", batch_size=64)
    rows = ds.take_all()
    seconds = time.perf_counter() - start

    results = {}
    for task_name in samples_by_task:
        task, inputs = get_task(task_name), [row for row in base if row["task"] == task_name]
        results[task_name] = []
        for cfg, cfg_dict in zip(configs, config_dicts):
            key = json.dumps(cfg_dict, sort_keys=True)
            mine = {int(r["index"]): _output_row(r) for r in rows
                    if r["config"] == key and r["task"] == task_name}
            ordered = [mine.get(i) or _lost_row(inputs[i]) for i in range(len(inputs))]
            results[task_name].append(Result(cfg, ordered, summarize(task, ordered, seconds), seconds))
    return results


def warm_cpu_workers(model: str, free_cpus: float) -> None:
    """Start the CPU stage's worker processes while the actors load their models: one
    task per decode slot left beside the actors imports torch and transformers and loads
    ``model``'s processor (cached per process), and Ray hands the decode tasks to these
    idle workers. Without it the first decode tasks pay that start-up (seconds) while the
    model waits: the first job on a fresh cluster ran at 55-73% of a plain loop's
    throughput, 92-100% with it (benchmarks/pipeline.py). Fire and forget: a failure here
    only loses the head start."""
    import ray

    @ray.remote(num_cpus=DECODE_CPUS)
    def warm(spec: str) -> None:
        from pipeline.infer import Preparer

        Preparer.from_spec(spec)

    for _ in range(max(1, min(8, int(free_cpus / DECODE_CPUS)))):
        warm.remote(model)


def _actor_cpus(resources: Resources, cluster_cpus: float) -> float:
    """CPUs each actor reserves, lowered when the actors would leave none for decoding
    (e.g. 2 actors on a 2-CPU machine): Ray's CPUs are logical, and a decode stage that can
    never be scheduled would stall the whole pipeline."""
    wanted = resources.cpus_per_actor
    if resources.actors * wanted + DECODE_CPUS > cluster_cpus:
        wanted = max(0.1, (cluster_cpus - DECODE_CPUS) / resources.actors)
    return wanted


def summarize(task, rows: list[dict], seconds: float) -> dict:
    """The task's metrics plus samples, errors, throughput and mean timings."""
    scored = [{**r, "answer": json.loads(r["answer"]), "meta": json.loads(r["meta"] or "{}"),
               "parsed": json.loads(r["parsed"]) if r["parsed"] else None} for r in rows]
    metrics = {k: float(v) for k, v in task.aggregate(scored).items()}
    ok = [r for r in rows if not r["error"]]

    def mean(key):
        values = [r[key] for r in ok if r[key] is not None]
        return sum(values) / len(values) if values else 0.0

    metrics.update(samples=len(rows), errors=len(rows) - len(ok),
                   samples_per_second=len(rows) / seconds if seconds else 0.0,
                   visual_tokens_before=mean("visual_tokens_before"),
                   visual_tokens_after=mean("visual_tokens_after"),
                   ttft_s=mean("ttft_s"), prefill_s=mean("prefill_s"),
                   decode_s_per_token=mean("decode_s_per_token"), select_s=mean("select_s"),
                   peak_memory_mb=max([r["peak_memory_mb"] or 0.0 for r in ok], default=0.0))
    return metrics


def write_predictions(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: r.get(k) for k in OUTPUT_COLUMNS} for r in rows])
    pq.write_table(table, path)
    return path


def _output_row(row: dict) -> dict:
    return {k: row.get(k) for k in OUTPUT_COLUMNS}


def _lost_row(base: dict) -> dict:
    row = {k: base.get(k) for k in OUTPUT_COLUMNS}
    row.update(error="lost in the pipeline", score=0.0)
    return row


def print_summary(task_name: str, result: Result) -> None:
    m = result.metrics
    print(f"\n{task_name} | {result.config.method} "
          f"{'' if result.config.pruning_rate is None else f'{result.config.pruning_rate:.1%}'}")
    for key in sorted(m):
        print(f"  {key:<22} {m[key]:.4g}")


def build_config(args) -> PruningConfig:
    values = {"method": args.method}
    if args.pruning_rate is not None:
        values["pruning_rate"] = args.pruning_rate
    if args.num_retain is not None:
        values["num_retain"] = args.num_retain
    if args.layer is not None:
        values["layer"] = args.layer
    for item in args.param or []:
        name, _, value = item.partition("=")
        values[name] = json.loads(value) if value.strip() not in ("", None) else value
    if args.method == "none":
        values.pop("pruning_rate", None)
    return PruningConfig.from_dict(values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="benchmark name (see pipeline.tasks.list_tasks())")
    parser.add_argument("--data", required=True, help="local directory in the benchmark's layout, or a hub id")
    parser.add_argument("--model", default="tiny:qwen2_vl", help="local path, hub id or tiny:<family>")
    parser.add_argument("--method", default="none", help="pruning method, or 'none' (default) for unpruned")
    parser.add_argument("--pruning-rate", type=float, help="share of visual tokens removed, in [0, 1)")
    parser.add_argument("--num-retain", type=int, help="visual tokens kept per span (instead of a rate)")
    parser.add_argument("--layer", type=int, help="decoder layer to prune before (method default if unset)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="a method parameter, e.g. --param token_batch=8 (repeatable)")
    parser.add_argument("--out", required=True, help="output directory (predictions.parquet, summary.json)")
    parser.add_argument("--limit", type=int, help="first N samples only")
    parser.add_argument("--media-root", help="where video/image files live (default: the data directory); videos "
                                             "are looked for under it in the spec's and the hub repository's "
                                             "layouts, then in lmms-eval's ($HF_HOME); see README")
    parser.add_argument("--actors", type=int, default=1, help="model replicas (actors) in the infer pool")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (0 on a CPU machine)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per model batch")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    parser.add_argument("--max-pixels", type=int, help="resize video frames to at most this many pixels")
    parser.add_argument("--dtype", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    args = parser.parse_args(argv)

    try:  # refuse a bad config before any work
        config = build_config(args).check_against(model_config(args.model))
        get_task(args.task)
    except ValueError as exc:
        parser.error(str(exc))
    samples = read_samples(args.task, args.data, limit=args.limit, media_root=args.media_root,
                           frames=args.frames)
    resources = Resources(actors=args.actors, num_gpus=args.num_gpus, batch_size=args.batch_size,
                          frames=args.frames, max_pixels=args.max_pixels, dtype=args.dtype)
    (result,) = evaluate_configs(args.task, samples, args.model, [config], resources)
    out = Path(args.out)
    write_predictions(result.rows, out / "predictions.parquet")
    (out / "summary.json").write_text(json.dumps({"task": args.task, "config": config.to_dict(),
                                                  "metrics": result.metrics}, indent=2))
    print_summary(args.task, result)
    print(f"\nwrote {out / 'predictions.parquet'} ({len(result.rows)} rows, {result.errors} errors)")


if __name__ == "__main__":
    main()
