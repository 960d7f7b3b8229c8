"""A sweep facing what goes wrong on a cluster: runs a killed sweep left RUNNING (closed
by the rerun, on a real MLflow sqlite store), a point answered again superseding its
older run, a data folder with no data files (refused before any MLflow run), and GPUs
the local cluster lacks (exit 1 with the reason, not a wait forever)."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline.samples import write_task
from pipeline.sweep.config import TrackingSpec
from pipeline.sweep.tracking import POINT_KEY, SUPERSEDED_BY, Tracker
from tests.jobs.test_sweep_config import sweep_main


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return Tracker(TrackingSpec(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="e"))


def test_a_rerun_closes_what_a_killed_run_left_running(tracker):
    parent = tracker.open_parent("key-1", "demo", {}, {"sweep.config": "demo"})
    finished = tracker.start_child(parent, "none", "p0", {})
    tracker.end(finished)
    killed_while_logging = tracker.start_child(parent, "vlm_pruner 0.889", "p1", {})
    old_grid = tracker.open_parent("key-0", "demo", {}, {"sweep.config": "demo"})  # an earlier grid, killed
    other_sweep = tracker.open_parent("key-9", "other", {}, {"sweep.config": "other"})
    closed = tracker.close_stale(parent, "demo")
    assert sorted(closed) == ["demo", "vlm_pruner 0.889"]
    status = {run: MlflowClient(tracker.uri).get_run(run).info.status
              for run in (parent, finished, killed_while_logging, old_grid, other_sweep)}
    assert status == {parent: "RUNNING", finished: "FINISHED", killed_while_logging: "KILLED",
                      old_grid: "KILLED", other_sweep: "RUNNING"}
    assert tracker.close_stale(parent, "demo") == []


def test_a_point_answered_again_supersedes_its_older_run(tracker):
    parent = tracker.open_parent("key-1", "demo", {}, {"sweep.config": "demo"})
    first = tracker.start_child(parent, "fastv 0.5", "p1", {})
    tracker.end(first)
    again = tracker.start_child(parent, "fastv 0.5", "p1", {})
    tracker.end(again)
    assert tracker.supersede("p1", again) == 1
    client = MlflowClient(tracker.uri)
    old = client.get_run(first)
    assert old.info.status == "KILLED" and old.data.tags[SUPERSEDED_BY] == again
    assert old.data.tags[POINT_KEY] == "p1" and old.data.tags[MLFLOW_PARENT_RUN_ID] == parent
    assert list(tracker.finished_points(["p1"])) == ["p1"]
    assert tracker.finished_points(["p1"])["p1"].info.run_id == again


def config_file(tmp_path, data, resources: str = "{actors: 1, batch_size: 2}") -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"model: tiny:qwen2_vl\ntasks: [{{name: pope, data: '{data}'}}]\n"
                    "grid: {methods: [fastv], pruning_rates: [0.5]}\n"
                    f"resources: {resources}\noutput: '{tmp_path / 'out'}'\n"
                    f"mlflow: {{tracking_uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n")
    return str(path)


def test_a_data_folder_without_data_files_is_refused_before_any_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("the parquet files were never copied")
    assert sweep_main()(["--config", config_file(tmp_path, tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "tasks[0].data" in err and "holds no .parquet" in err, err
    assert not (tmp_path / "mlflow.db").exists() and not ray.is_initialized()


def test_gpus_the_local_cluster_lacks_end_the_sweep_with_exit_1(tmp_path, capsys):
    data = write_task("pope", tmp_path / "data", 2)
    try:
        code = sweep_main()(["--config", config_file(tmp_path, data, "{actors: 1, num_gpus: 1}")])
    finally:
        ray.shutdown()
    assert code == 1
    err = capsys.readouterr().err
    assert "resources.num_gpus: each actor asks for 1 GPUs, but this local Ray cluster has 0" in err
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (parent,) = client.search_runs([experiment.experiment_id])
    assert parent.info.status == "FAILED"
