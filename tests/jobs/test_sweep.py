"""jobs/sweep.py end to end: a real Ray job on a local head (`ray start --head`, then
`ray job submit --working-dir <repo>`), the tiny Qwen2-VL, sample sets written by
pipeline.samples, and a real MLflow sqlite store; then resuming it.

The head is started as `ray start --head --block` in a session of its own on free ports
and stopped by signalling that session's processes (other Ray clusters on the machine
are left alone, so no `ray stop`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline.samples import write_task

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
TASKS = ("pope", "egoschema")
EXPERIMENT = "sweep-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra) -> dict:
    # Token auth would be switched on by a token left in ~/.ray by other local clusters.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{RAY.parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


@pytest.fixture(scope="module")
def ray_head():
    """(GCS address, dashboard URL or None when the job API never came up) of a local head."""
    gcs, dashboard = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="rayt")  # short: Ray's socket paths must fit in 107 bytes
    log = open(Path(temp) / "head.log", "w")
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2", "--object-store-memory=500000000",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
    url, deadline = f"http://127.0.0.1:{dashboard}", time.monotonic() + 150
    up = False
    while not up and time.monotonic() < deadline and head.poll() is None:
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=5) as response:
                up = response.status == 200
        except OSError:
            time.sleep(2)
    try:
        assert head.poll() is None, (Path(temp) / "head.log").read_text()[-3000:]
        yield f"127.0.0.1:{gcs}", url if up else None
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` then stops what it started
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            # The session created above holds this head's processes only (GCS, raylet,
            # dashboard, workers), not other Ray clusters on the machine (no `ray stop`).
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(config path, tracking URI): 2 tasks x 2 samples, vlm_pruner and random at 0.778, plus 'none'."""
    root = tmp_path_factory.mktemp("sweep")
    tasks = [{"name": t, "data": str(write_task(t, root / "samples", 2)), "limit": 2} for t in TASKS]
    uri = f"sqlite:///{root}/mlflow.db"
    config = root / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny:qwen2_vl", "tasks": tasks,
        "grid": {"methods": ["vlm_pruner", "random"], "pruning_rates": [0.778]},
        "resources": {"actors": 1, "batch_size": 2, "frames": 8}, "mlflow": {"experiment": EXPERIMENT},
        "output": str(root / "rows")}))
    return config, uri


def run_sweep(config: Path, uri: str, *args: str, ray_address=None) -> subprocess.CompletedProcess:
    env = child_env(MLFLOW_TRACKING_URI=uri, **({"RAY_ADDRESS": ray_address} if ray_address else {}))
    return subprocess.run([sys.executable, "jobs/sweep.py", "--config", str(config), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def runs(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")


def children_of(all_runs, parent):
    return [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.fixture(scope="module")
def first_run(ray_head, sweep):
    """The sweep submitted as a Ray job (or, without the job API, a driver on the head)."""
    address, dashboard = ray_head
    config, uri = sweep
    if dashboard is None:
        import warnings

        warnings.warn("the Ray dashboard (job API) did not start here; the sweep runs as a driver on the head")
        done = run_sweep(config, uri, ray_address=address)
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout
    runtime_env = {"working_dir": str(REPO), "env_vars": {"MLFLOW_TRACKING_URI": uri}}
    done = subprocess.run(
        [str(RAY), "job", "submit", "--address", dashboard, "--runtime-env-json", json.dumps(runtime_env), "--",
         sys.executable, "jobs/sweep.py", "--config", str(config)],
        env=child_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "succeeded" in done.stdout, (done.stdout + done.stderr)[-6000:]
    return done.stdout


def test_a_ray_job_logs_a_parent_and_one_child_per_grid_point(first_run, sweep):
    _, uri = sweep
    all_runs = runs(uri)
    (parent,) = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = children_of(all_runs, parent)
    assert sorted(r.info.run_name for r in children) == ["none", "random-0.778", "vlm_pruner-0.778"]
    assert all(r.info.status == "FINISHED" for r in all_runs)
    assert parent.data.params["tasks"] == "pope,egoschema" and parent.data.params["model"] == "tiny:qwen2_vl"
    assert parent.data.params["scoring"] == "lmms_eval 0.7.3"
    by_name = {r.info.run_name: r for r in children}
    for run in children:
        params, metrics = run.data.params, run.data.metrics
        assert params["model"] == "tiny:qwen2_vl" and params["tasks"] == "pope,egoschema"
        assert params["scoring"] == "lmms_eval 0.7.3"
        assert run.data.tags["sweep.point_key"]
        for task in TASKS:
            assert metrics[f"{task}/samples"] == 2 and metrics[f"{task}/errors"] == 0
            assert {f"{task}/score", f"{task}/prefill_s", f"{task}/flops_speedup"} <= set(metrics)
        for key in ("ttft_s", "prefill_s", "decode_s_per_token", "samples_per_second", "peak_memory_mb",
                    "prefill_tflops", "flops_speedup", "errors", "relative_tasks"):
            assert key in metrics, key
        assert metrics["samples"] == 4 and metrics["errors"] == 0 and metrics["samples_per_second"] > 0
        artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run.info.run_id)}
        assert artifacts == {"predictions.parquet", "config.yaml"}
    none, pruned = by_name["none"], by_name["vlm_pruner-0.778"]
    assert none.data.params["method"] == "none" and "pruning_rate" not in none.data.params
    assert pruned.data.params["pruning_rate"] == "0.778" and pruned.data.params["layer"] == "2"
    assert pruned.data.params["params.token_batch"] == "16"
    m0, m1 = none.data.metrics, pruned.data.metrics
    assert m0["visual_tokens_after"] == m0["visual_tokens_before"] > 0
    assert m1["visual_tokens_before"] == m0["visual_tokens_before"] > m1["visual_tokens_after"] > 0
    assert m0["flops_speedup"] == 1.0 and m1["flops_speedup"] > 1.0
    assert m1["prefill_tflops"] < m1["prefill_tflops_unpruned"] == pytest.approx(m0["prefill_tflops"])
    parent_files = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "scores.png", "speedup.png", "kept_tokens"} <= parent_files
    pictures = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(parent.info.run_id, "kept_tokens")}
    assert pictures == {f"kept_tokens/{t}.png" for t in TASKS}
    assert "| vlm_pruner-0.778 |" in first_run  # the table printed at the end


def test_running_the_same_sweep_again_runs_nothing(first_run, sweep):
    config, uri = sweep
    before = {r.info.run_id for r in runs(uri)}
    done = run_sweep(config, uri)  # needs no Ray: nothing is left to run
    assert done.returncode == 0, done.stderr[-4000:]
    assert "3 already finished, 0 to run" in done.stdout
    after = runs(uri)
    assert {r.info.run_id for r in after} == before
    assert all(r.info.status == "FINISHED" for r in after)
    assert done.stdout.count("| reused |") == 3


def test_a_grown_grid_runs_only_its_new_points_and_summarises_all(first_run, ray_head, sweep, tmp_path):
    config, uri = sweep
    before = runs(uri)
    done = run_sweep(config, uri, "--set", "grid.methods=[vlm_pruner, random, fastv]", ray_address=ray_head[0])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "3 already finished, 1 to run" in done.stdout
    after = runs(uri)
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert sorted(r.info.run_name for r in new) == ["fastv-0.778", "sweep"]  # a new grid: a new parent
    (parent,) = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
    summary = mlflow.MlflowClient(uri).download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path))
    lines = Path(summary).read_text().splitlines()
    names = ["none", "vlm_pruner-0.778", "random-0.778", "fastv-0.778"]
    assert [line.split(",")[0] for line in lines[1:]] == names
    assert [line.split(",")[-2] for line in lines[1:]] == ["reused", "reused", "reused", "new"]
