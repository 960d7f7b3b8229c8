"""Sweep pruning configurations over benchmarks with one model; results go to MLflow.

    python jobs/sweep.py --config configs/demo.yaml [--set key=value ...]
    ray job submit --working-dir . -- python jobs/sweep.py --config configs/demo.yaml

The grid (methods x pruning rates x layers x method parameters, plus the unpruned
baseline 'none', always) runs over every task in ONE Ray Data job: each video is decoded
once, each row fanned out to every grid point, and each actor loads the model once for
the whole sweep (pipeline.evaluate.evaluate_tasks). The whole config is checked first
(every grid point against the model's config, tasks registered, data present or a hub
id); a bad entry exits with code 2 and names the field, before any work or MLflow run.

MLflow (mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the
working directory): one parent run per sweep and one nested run per grid point, with
the flattened config as params, per-task metrics (<task>/score, the task's other
metrics, tokens, timings, FLOPs), avg_relative (the paper's Avg. %: per task score /
baseline score, averaged, x100), the predictions parquet and the resolved config; the
parent gets the summary table (csv, markdown), plots and kept-token pictures. Running
the same sweep again skips the grid points already FINISHED in the experiment and
reruns the rest; the summary covers all (pipeline/sweep/tracking.py says how points are
matched). In a Ray job the working directory is a copy: give MLFLOW_TRACKING_URI an
absolute path (sqlite:////abs/path/mlflow.db) or a tracking server.

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

from pipeline.evaluate import evaluate_tasks, read_samples, write_predictions  # noqa: E402
from pipeline.models import model_config  # noqa: E402
from pipeline.sweep import report  # noqa: E402
from pipeline.sweep.config import SweepConfig, SweepConfigError, describe, load  # noqa: E402
from pipeline.sweep.metrics import point_metrics, relative_metrics  # noqa: E402
from pipeline.sweep.tracking import Tracker, point_key, sweep_key  # noqa: E402
from pruning.config import NO_PRUNING  # noqa: E402

EXIT_BAD_CONFIG = 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobs/sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (YAML; see configs/demo.yaml):\n" + describe())
    parser.add_argument("--config", required=True, type=Path, help="the sweep's YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a dotted key with a YAML value, e.g. --set grid.pruning_rates=[0.5] "
                             "--set tasks.0.limit=2 --set resources.frames=8 (repeatable)")
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
    run(config, model, base=args.config.resolve().parent, name=args.config.stem)
    return 0


def run(config: SweepConfig, model, *, base: Path, name: str) -> list[report.PointSummary]:
    """Evaluate the grid points not yet FINISHED, log them, and log and print the summary."""
    start = time.perf_counter()
    points = config.points()
    keys = [point_key(config, p) for p in points]
    names = _names(config, points)
    tasks = [t.name for t in config.tasks]
    tracker = Tracker(config.mlflow)
    parent = tracker.open_parent(sweep_key(config, keys), name, config.flat(), {"sweep.config": name})
    try:
        done = tracker.finished_points(keys)
        todo = [(p, k) for p, k in zip(points, keys) if k not in done]
        samples = {t.name: read_samples(t.name, str(_prepare(config, t, base)), limit=t.limit,
                                        frames=config.resources.frames) for t in config.tasks}
        print(f"sweep {name}: {len(points)} grid points x {len(tasks)} tasks; "
              f"{len(points) - len(todo)} already finished, {len(todo)} to run", flush=True)
        rows = {}  # point key -> {task: rows}, this run's points only
        summaries = {k: report.PointSummary(names[k], k, p, run.data.metrics, run.info.run_id, new=False)
                     for p, k in zip(points, keys) if (run := done.get(k))}
        if todo:
            results = evaluate_tasks(samples, config.model, [p for p, _ in todo], config.resources)
            for i, (point, key) in enumerate(todo):  # the baseline, when new, comes first
                by_task = {task: results[task][i] for task in tasks}
                rows[key] = {task: r.rows for task, r in by_task.items()}
                metrics = point_metrics(by_task, model, point)
                baseline = metrics if point.method == NO_PRUNING else summaries[keys[0]].metrics
                metrics.update(relative_metrics(metrics, baseline, tasks))
                run_id = _log_point(tracker, config, parent, names[key], key, point, metrics, rows[key])
                summaries[key] = report.PointSummary(names[key], key, point, metrics, run_id, new=True)
        ordered = [summaries[k] for k in keys]
        _log_summary(tracker, config, parent, ordered, samples, rows)
        tracker.log(parent, metrics={"points": len(points), "points_run": len(todo),
                                     "sweep_seconds": time.perf_counter() - start})
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    tracker.end(parent)
    print("\n" + report.markdown(ordered, tasks))
    for task in tasks:
        print(report.score_grid(ordered, task))
    print(f"MLflow: experiment {config.mlflow.experiment!r}, parent run {parent}; browse with\n"
          f"  mlflow ui --backend-store-uri {tracker.uri}")
    return ordered


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
               rows_by_task) -> str:
    params = {k: v for k, v in config.flat().items() if not k.startswith("grid.")}
    params.update(point.flat())
    run_id = tracker.start_child(parent, name, key, {"sweep.method": point.method})
    try:
        with tempfile.TemporaryDirectory() as scratch:
            predictions = write_predictions([r for rows in rows_by_task.values() for r in rows],
                                            Path(scratch) / "predictions.parquet")
            resolved = Path(scratch) / "config.yaml"
            resolved.write_text(yaml.safe_dump({
                "model": config.model, "tasks": [vars(t) for t in config.tasks], "point": point.to_dict(),
                "resources": vars(config.resources), "point_key": key}, sort_keys=False))
            tracker.log(run_id, params=params, metrics=metrics, artifacts=[predictions, resolved])
    except BaseException:
        tracker.end(run_id, "FAILED")  # not FINISHED: the next run of the sweep redoes this point
        raise
    tracker.end(run_id)
    return run_id


def _log_summary(tracker: Tracker, config: SweepConfig, parent: str, points, samples, fresh_rows) -> None:
    """The table, plots and kept-token pictures, logged to the parent run."""
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
        rows = {s.name: _rows(tracker, s, fresh_rows, out) for s in picks}
        pictures = [report.kept_tokens_figure(task, samples[task], [(s.name, rows[s.name][task]) for s in picks],
                                              out / f"{task}.png", frames=config.resources.frames,
                                              max_pixels=config.resources.max_pixels) for task in tasks]
        tracker.log(parent, artifacts=[p for p in pictures if p], artifact_dir="kept_tokens")


def _rows(tracker: Tracker, summary: report.PointSummary, fresh_rows, scratch: Path) -> dict[str, list[dict]]:
    """A point's output rows per task: this run's, or its earlier run's predictions artifact."""
    if summary.key in fresh_rows:
        return fresh_rows[summary.key]
    import pyarrow.parquet as pq

    path = tracker.download(summary.run_id, "predictions.parquet", scratch / summary.run_id)
    by_task: dict[str, list[dict]] = {}
    for row in pq.read_table(path).to_pylist():
        by_task.setdefault(row["task"], []).append(row)
    return by_task


if __name__ == "__main__":
    sys.exit(main())
