"""Sweep pruning configurations over benchmarks with one model; results go to MLflow.

    python jobs/sweep.py --config configs/demo.yaml [--set key=value ...] [--retry-errors]
    ray job submit --working-dir . -- python jobs/sweep.py --config configs/demo.yaml

The grid (methods x pruning rates x layers x method parameters, plus the unpruned
baseline 'none', always) runs over every task in ONE Ray Data job (pipeline.job): the
workers read each benchmark's rows a range at a time, decode each sample once, answer
it under every grid point (each actor loads the model once for the whole sweep) and
store every answered row under ``output`` as they go. The whole config is checked first
(every grid point against the model's config, tasks registered, data present or a hub
id); a bad entry exits with code 2 and names the field, before any work or MLflow run.

MLflow (mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the
working directory): one parent run per sweep and one nested run per grid point, logged
as soon as that point's rows are all stored, with the flattened config as params
(``scoring``: "lmms_eval 0.7.3", the scoring used),
per-task metrics (<task>/score, the task's other metrics, tokens, timings, FLOPs),
avg_relative (the paper's Avg. %: per task score / baseline score, averaged, x100),
the predictions parquet and the resolved config; the parent gets the summary table
(csv, markdown), plots and kept-token pictures. The metrics and predictions are
computed by Ray tasks from the stored rows: the driver holds no sample and no row.

Resuming: running the same sweep again skips the grid points already FINISHED in the
experiment (pipeline/sweep/tracking.py says how points are matched) and, for the
others, every (sample, point) answer already stored under ``output`` (an interrupted
sweep loses at most the rows in flight); ``--retry-errors`` also answers again the
stored rows that have an error. In a Ray job the working directory is a copy: give
``output`` and MLFLOW_TRACKING_URI absolute paths (sqlite:////abs/path/mlflow.db) on
storage every node sees, or a tracking server and an s3:// output.

Ray's workers import this repo's packages: run from the repo root (Ray puts the
driver's working directory on their path), as a Ray job with --working-dir, or with
the package installed (pip install -e .).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from the repo root (or a Ray job's copy of it)

import yaml  # noqa: E402

from pipeline import job  # noqa: E402
from pipeline.models import model_config  # noqa: E402
from pipeline.sources import task_source  # noqa: E402
from pipeline.sweep import report  # noqa: E402
from pipeline.sweep.config import SweepConfig, SweepConfigError, describe, load  # noqa: E402
from pipeline.sweep.metrics import relative_metrics  # noqa: E402
from pipeline.sweep.points import finish_point, head, local_copy, picture  # noqa: E402
from pipeline.sweep.tracking import SWEEP_CONFIG, Tracker, point_key, sweep_key  # noqa: E402
from pipeline.tasks.scoring import scoring_label  # noqa: E402
from pruning.config import NO_PRUNING  # noqa: E402

EXIT_BAD_CONFIG = 2
EXIT_FAILED = 1  # the job could not go on (pipeline.job.PipelineError)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobs/sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (YAML; see configs/demo.yaml):\n" + describe())
    parser.add_argument("--config", required=True, type=Path, help="the sweep's YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a dotted key with a YAML value, e.g. --set grid.pruning_rates=[0.5] "
                             "--set tasks.0.limit=2 --set resources.frames=8 (repeatable)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="answer again the stored rows that have an error (e.g. media that were unavailable)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config, args.set)
        try:
            model = model_config(config.model)
        except (OSError, ValueError) as exc:
            raise SweepConfigError("model", f"cannot read the config of {config.model!r}: {exc}") from None
        config.check(model, root=REPO, base=args.config.resolve().parent)
    except SweepConfigError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        run(config, model, base=args.config.resolve().parent, name=args.config.stem, retry_errors=args.retry_errors)
    except job.PipelineError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def run(config: SweepConfig, model, *, base: Path, name: str,
        retry_errors: bool = False) -> list[report.PointSummary]:
    """Evaluate the grid points not yet FINISHED, log each as soon as its rows are stored,
    then log and print the summary."""
    start = time.perf_counter()
    points = config.points()
    keys = [point_key(config, p) for p in points]
    names = _names(config, points)
    tasks = [t.name for t in config.tasks]
    tracker = Tracker(config.mlflow)
    parent = tracker.open_parent(sweep_key(config, keys), name, {**config.flat(), "output": config.output},
                                 {SWEEP_CONFIG: name})
    try:
        stale = tracker.close_stale(parent, name)
        if stale:
            print(f"marked {len(stale)} runs that a killed run left RUNNING as KILLED ({', '.join(stale)})",
                  flush=True)
        done = tracker.finished_points(keys)
        if retry_errors:  # finished points with error rows run again (their error rows only)
            done = {k: run for k, run in done.items() if not run.data.metrics.get("errors")}
        todo = [(p, k) for p, k in zip(points, keys) if k not in done]
        print(f"sweep {name}: {len(points)} grid points x {len(tasks)} tasks; "
              f"{len(points) - len(todo)} already finished, {len(todo)} to run", flush=True)
        summaries = {k: report.PointSummary(names[k], k, p, run.data.metrics, run.info.run_id, new=False)
                     for p, k in zip(points, keys) if (run := done.get(k))}
        sources = tuple(task_source(t.name, str(_prepare(config, t, base)), limit=t.limit) for t in config.tasks)
        predictions = {}  # point key -> its predictions file (this run's points)
        if todo:
            plan = job.Plan(config.model, sources, tuple(p for p, _ in todo), config.output_uri(),
                            config.resources, keep_errors=not retry_errors, scoring=config.scoring)
            logger = PointLogger(tracker, config, parent, plan, todo, names,
                                 summaries[keys[0]].metrics if keys[0] in summaries else None)
            progress = job.run(plan, on_start=logger.start, on_written=logger.written, desc=f"sweep {name}")
            logger.finish(progress)
            for (point, key), (metrics, run_id, path) in zip(todo, logger.logged):
                summaries[key] = report.PointSummary(names[key], key, point, metrics, run_id, new=True)
                predictions[key] = path
        ordered = [summaries[k] for k in keys]
        _log_summary(tracker, config, parent, ordered, sources, predictions)
        tracker.log(parent, metrics={"points": len(points), "points_run": len(todo),
                                     "sweep_seconds": time.perf_counter() - start})
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    tracker.end(parent)
    print("\n" + report.markdown(ordered, tasks))
    for task in tasks:
        print(report.score_grid(ordered, task))
    failed = [s for s in ordered if s.metrics.get("errors")]
    if failed:
        print(f"{len(failed)} grid points have rows with errors ({int(sum(s.metrics['errors'] for s in failed))} "
              "rows: see their predictions' error column); those that media or workers caused are answered "
              "again by a rerun with --retry-errors")
    print(f"scoring: {scoring_label(config.scoring)}")
    print(f"MLflow: experiment {config.mlflow.experiment!r}, parent run {parent}; browse with\n"
          f"  mlflow ui --backend-store-uri {tracker.uri}\nrows: {config.output_uri()}")
    return ordered


class PointLogger:
    """Logs each grid point of a running job to MLflow as soon as every task's rows of it
    are stored (metrics and predictions computed by a Ray task from the stored rows),
    the unpruned baseline first: the others' relative scores need it."""

    def __init__(self, tracker: Tracker, config: SweepConfig, parent: str, plan, todo, names,
                 baseline: dict | None):
        self.tracker, self.config, self.parent, self.plan, self.todo = tracker, config, parent, plan, todo
        self.names, self.baseline = names, baseline
        self.logged: list = [None] * len(todo)  # per point: (metrics, run id, predictions file)
        self.waiting: list[int] = []
        self.progress = None

    def start(self, progress) -> None:
        self.progress = progress
        for point in range(len(self.todo)):  # stored by an earlier, interrupted run
            if progress.complete(point):
                self._ready(point)

    def written(self, row: dict) -> None:
        point = row["point"]
        if self.logged[point] is None and point not in self.waiting and self.progress.complete(point):
            self._ready(point)

    def finish(self, progress) -> None:
        """Log what is left (a point whose rows the job lost gets them as error rows)."""
        self.progress = progress
        for point in range(len(self.todo)):
            if self.logged[point] is None and point not in self.waiting:
                self._ready(point)
        if self.waiting:  # no baseline in this run or before: log without relative scores
            self.baseline = {}
            self._flush()

    def _ready(self, point: int) -> None:
        self.waiting.append(point)
        if self.todo[point][0].method == NO_PRUNING:
            self.waiting.sort(key=lambda p: self.todo[p][0].method != NO_PRUNING)
        self._flush()

    def _flush(self) -> None:
        import ray

        while self.waiting:
            point = self.waiting[0]
            is_baseline = self.todo[point][0].method == NO_PRUNING
            if self.baseline is None and not is_baseline:
                return
            self.waiting.pop(0)
            config, key = self.todo[point]
            answered = {name: n for (name, p), n in self.progress.written.items() if p == point}
            # No CPU asked: the job's actors may hold them all until it ends, and this is short.
            finish = ray.remote(num_cpus=0)(finish_point)
            metrics, path = ray.get(finish.remote(self.plan, point, self.progress.counts, key, answered,
                                                  self.progress.seconds or 1.0))
            tasks = [t.name for t in self.config.tasks]
            metrics.update(relative_metrics(metrics, metrics if is_baseline else self.baseline, tasks))
            if is_baseline:
                self.baseline = metrics
            run_id = _log_point(self.tracker, self.config, self.parent, self.names[key], key, config, metrics,
                                path)
            self.logged[point] = (metrics, run_id, path)
            print(f"logged {self.names[key]}", flush=True)


def _names(config: SweepConfig, points) -> dict[str, str]:
    varying = sorted({n for params in config.grid.params.values() for n, v in params.items() if len(v) > 1})
    return {point_key(config, p): report.point_name(p, len(config.grid.layers) > 1, varying) for p in points}


def _prepare(config: SweepConfig, task, base: Path) -> Path | str:
    """The task's data path (or hub id), writing its sample set first when asked to and missing."""
    path = config.data_path(task, REPO, base)
    if path is None:
        return task.data
    if not path.exists() and task.samples:
        import datasets

        from pipeline.samples import write_task

        datasets.disable_progress_bars()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}-") as scratch:
            written = write_task(task.name, scratch, task.samples)
            try:
                os.replace(written, path)  # whole or not at all, even with two sweeps at once
            except OSError:
                if not path.exists():
                    raise
        print(f"wrote {task.samples} {task.name} samples to {path}", flush=True)
    return path


def _log_point(tracker: Tracker, config: SweepConfig, parent: str, name: str, key: str, point, metrics,
               predictions: str) -> str:
    params = {k: v for k, v in config.flat().items() if not k.startswith("grid.")}
    params.update(point.flat())
    run_id = tracker.start_child(parent, name, key, {"sweep.method": point.method})
    try:
        with tempfile.TemporaryDirectory() as scratch:
            named = local_copy(config.output_uri(), predictions, Path(scratch) / "predictions.parquet")
            resolved = Path(scratch) / "config.yaml"
            resolved.write_text(yaml.safe_dump({
                "model": config.model, "tasks": [vars(t) for t in config.tasks], "point": point.to_dict(),
                "resources": vars(config.resources), "scoring": scoring_label(config.scoring),
                "point_key": key, "output": config.output},
                sort_keys=False))
            tracker.log(run_id, params=params, metrics=metrics, artifacts=[named, resolved])
    except BaseException:
        tracker.end(run_id, "FAILED")  # not FINISHED: the next run of the sweep redoes this point
        raise
    tracker.end(run_id)
    tracker.supersede(key, run_id)
    return run_id


def _log_summary(tracker: Tracker, config: SweepConfig, parent: str, points, sources, predictions) -> None:
    """The table, plots and kept-token pictures, logged to the parent run. The pictures
    read a task's first few samples and the picked points' first rows here, on the driver."""
    tasks = [t.name for t in config.tasks]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        (out / "summary.md").write_text(report.markdown(points, tasks) + "\n" +
                                        "\n".join(report.score_grid(points, task) for task in tasks))
        files = [report.write_csv(points, tasks, out / "summary.csv"), out / "summary.md",
                 report.plot_scores(points, tasks, out / "scores.png"),
                 report.plot_speedups(points, out / "speedup.png")]
        tracker.log(parent, artifacts=files)
        picks = report.picture_points(points)
        files = {s.name: _predictions_file(tracker, config, s, predictions, out) for s in picks}
        pictures = []
        for source in sources:
            png = picture(source, [(s.name, head(files[s.name], source.name)) for s in picks],
                          config.resources.frames, config.resources.max_pixels)
            if png:
                pictures.append(out / f"{source.name}.png")
                pictures[-1].write_bytes(png)
        tracker.log(parent, artifacts=pictures, artifact_dir="kept_tokens")


def _predictions_file(tracker: Tracker, config: SweepConfig, summary: report.PointSummary, fresh: dict,
                      scratch: Path) -> Path:
    """A point's predictions parquet on this machine: this run's, or its earlier run's artifact."""
    if summary.key in fresh:
        return local_copy(config.output_uri(), fresh[summary.key], scratch / f"{summary.key}.parquet")
    return tracker.download(summary.run_id, "predictions.parquet", scratch / summary.run_id)


if __name__ == "__main__":
    sys.exit(main())
