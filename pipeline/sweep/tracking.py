"""A sweep's MLflow runs: one parent run per sweep, one nested child run per grid point.

Runs are found again by tags, so running the same sweep twice resumes it:

    sweep.point_key   on a child: a stable hash of what decides its results (model, the
                      task list with data and limit, the frames / max_pixels / dtype the
                      model sees, the scoring with its lmms-eval release, and the grid
                      point's full PruningConfig). A FINISHED child with the key is
                      reused by any later sweep in the experiment.
    sweep.key         on the parent: the hash of the model, task list, those inputs and
                      every point's key. The same sweep reopens its parent; a changed
                      grid gets a new parent whose summary still covers the reused points.
    sweep.config      on the parent: the config file's name. A rerun marks the runs a
                      killed run of it left RUNNING as KILLED (``close_stale``).
    sweep.superseded_by  on a point's older run, now KILLED, when the point was answered
                      again (``--retry-errors``): the run that replaces it.

Only the driver talks to MLflow (``MlflowClient``, no global active run).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline.sweep.config import SweepConfig, TrackingSpec
from pipeline.tasks.scoring import scoring_label
from pruning import PruningConfig

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
POINT_KEY, SWEEP_KEY = "sweep.point_key", "sweep.key"
SWEEP_CONFIG = "sweep.config"  # on the parent: the config file's name
SUPERSEDED_BY = "sweep.superseded_by"  # on a point's older run: the run that answered it again


def point_key(config: SweepConfig, point: PruningConfig) -> str:
    """The stable hash that identifies ``point``'s results within ``config``'s sweep."""
    r = config.resources
    return _hash({"model": config.model, "tasks": [[t.name, t.data, t.limit] for t in config.tasks],
                  "inputs": {"frames": r.frames, "max_pixels": r.max_pixels, "dtype": r.dtype},
                  "scoring": scoring_label(config.scoring), "point": point.to_dict()})


def sweep_key(config: SweepConfig, point_keys: Iterable[str]) -> str:
    return _hash({"model": config.model, "tasks": [[t.name, t.data, t.limit] for t in config.tasks],
                  "points": sorted(point_keys)})


def tracking_uri(spec: TrackingSpec) -> str:
    return spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class Tracker:
    """The experiment of ``spec``, created on first use."""

    def __init__(self, spec: TrackingSpec):
        self.uri = tracking_uri(spec)
        database = _sqlite_file(self.uri)
        if database is not None:  # sqlite creates the file, not its folder
            database.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(spec.experiment)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
        else:
            location = spec.artifact_location or _beside_database(self.uri, spec.experiment)
            self.experiment_id = self.client.create_experiment(spec.experiment, artifact_location=location)

    def open_parent(self, key: str, name: str, params: Mapping[str, object], tags: Mapping[str, str]) -> str:
        """The sweep's parent run (reopened when one with ``key`` exists), now RUNNING."""
        found = self.client.search_runs([self.experiment_id], f"tags.`{SWEEP_KEY}` = '{key}'",
                                        max_results=1, order_by=["attributes.start_time DESC"])
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, SWEEP_KEY: key})
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def close_stale(self, parent_id: str, name: str) -> list[str]:
        """Mark as KILLED what a killed run of this sweep left RUNNING: this parent's
        children (a point killed while it was logged; the rerun logs it afresh) and other
        parents of the sweep config ``name`` (a killed run of an earlier grid). Returns
        their names. Two sweeps of one config file at once would close each other's parent:
        run them under different names."""
        running = "attributes.status = 'RUNNING'"
        stale = list(self.client.search_runs([self.experiment_id],
                                             f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and {running}"))
        stale += [run for run in self.client.search_runs([self.experiment_id], f"tags.`{SWEEP_CONFIG}` = '{name}' "
                                                                                f"and {running}")
                  if run.info.run_id != parent_id]
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return [run.info.run_name for run in stale]

    def supersede(self, key: str, run_id: str) -> int:
        """Mark the other FINISHED runs of point ``key`` KILLED, tagged with the run that
        replaces them (``run_id``: the point answered again, e.g. with --retry-errors).
        Returns how many."""
        older = [run for run in self.client.search_runs(
                     [self.experiment_id], f"tags.`{POINT_KEY}` = '{key}' and attributes.status = 'FINISHED'")
                 if run.info.run_id != run_id]
        for run in older:
            self.client.set_tag(run.info.run_id, SUPERSEDED_BY, run_id)
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(older)

    def finished_points(self, keys: Iterable[str]) -> dict[str, object]:
        """``{key: Run}``: the latest FINISHED child run of each key that has one."""
        wanted, found, token = set(keys), {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], "attributes.status = 'FINISHED'",
                                           max_results=1000, order_by=["attributes.start_time DESC"],
                                           page_token=token)
            for run in page:
                key = run.data.tags.get(POINT_KEY)
                if key in wanted and key not in found:
                    found[key] = run
            token = page.token
            if not token:
                return found

    def start_child(self, parent_id: str, name: str, key: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**tags, MLFLOW_PARENT_RUN_ID: parent_id, POINT_KEY: key})
        return run.info.run_id

    def log(self, run_id: str, *, params: Optional[Mapping[str, object]] = None,
            metrics: Optional[Mapping[str, float]] = None, artifacts: Iterable[Path] = (),
            artifact_dir: Optional[str] = None) -> None:
        now = int(time.time() * 1000)
        params = [Param(k, str(v)) for k, v in (params or {}).items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        for i in range(0, len(params), 100):  # MLflow's per-call limits
            self.client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for path in artifacts:
            self.client.log_artifact(run_id, str(path), artifact_dir)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

        dst.mkdir(parents=True, exist_ok=True)
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)  # one small file: no bar in the job's log
        return Path(self.client.download_artifacts(run_id, path, str(dst)))


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _sqlite_file(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), or None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix):]).resolve()


def _beside_database(uri: str, experiment: str) -> Optional[str]:
    """``mlruns/<experiment>`` next to a sqlite database file, so artifacts stay with their
    database even when the sweep runs somewhere else (a Ray job's working directory);
    None (MLflow's default) for other stores."""
    database = _sqlite_file(uri)
    if database is None:
        return None
    return (database.parent / "mlruns" / re.sub(r"[^\w.-]", "_", experiment)).as_uri()
