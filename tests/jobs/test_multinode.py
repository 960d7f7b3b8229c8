"""A sweep on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head with no
CPUs, so every task and actor runs on one of two worker nodes) gives the same results
as on one node."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from jobs import sweep
from pipeline.samples import write_task

TASKS = ("pope", "egoschema")
# Columns that decide a result (timings differ run to run).
SAME = ["task", "index", "id", "output", "parsed", "score", "error", "visual_tokens_before",
        "visual_tokens_after", "kept"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return {t: str(write_task(t, root, 2)) for t in TASKS}


def run_sweep(tmp_path, data, name: str) -> dict:
    """``{point name: (metrics, predictions rows)}`` of a small sweep into its own store."""
    config = tmp_path / f"{name}.yaml"
    uri = f"sqlite:///{tmp_path}/{name}.db"
    config.write_text(yaml.safe_dump({
        "model": "tiny:qwen2_vl", "tasks": [{"name": t, "data": data[t]} for t in TASKS],
        "grid": {"methods": ["vlm_pruner", "random"], "pruning_rates": [0.778]},
        "resources": {"actors": 1, "batch_size": 2, "frames": 8},
        "mlflow": {"experiment": name, "tracking_uri": uri}, "output": str(tmp_path / f"{name}-rows")}))
    assert sweep.main(["--config", str(config)]) == 0
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == name]
    out = {}
    for run in client.search_runs([experiment.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            continue
        path = client.download_artifacts(run.info.run_id, "predictions.parquet", str(tmp_path))
        metrics = {k: v for k, v in run.data.metrics.items() if k.endswith(("/score", "/samples", "/errors",
                                                                            "visual_tokens_after"))}
        out[run.info.run_name] = (metrics, pq.read_table(path, columns=SAME).to_pylist())
    return out


def test_a_sweep_on_three_nodes_equals_the_sweep_on_one(tmp_path, data):
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        one_node = run_sweep(tmp_path, data, "single")
    finally:
        ray.shutdown()

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 200 * 2**20})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20) for _ in range(2)]
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        nodes = run_sweep(tmp_path, data, "cluster")
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert workers and set(nodes) == set(one_node) == {"none", "vlm_pruner-0.778", "random-0.778"}
    for name, (metrics, rows) in one_node.items():
        assert nodes[name][0] == metrics, name
        assert nodes[name][1] == rows, name
        assert len(rows) == 2 * len(TASKS)
