"""cluster.yaml through Ray's own cluster-launcher validator, and the KubeRay RayJob
example's shape and sweep arguments (no cloud or Kubernetes needed)."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

from pipeline.sweep.config import load

REPO = Path(__file__).resolve().parents[2]
IMAGE = "rayproject/ray:2.60.0-py311-gpu"


def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_validator():
    config = prepare_config(cluster())  # what `ray up` does before it validates
    validate_config(config)
    assert config["docker"]["image"] == IMAGE
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 for t in workers.values())
    assert any("pip install -e" in c for c in config["worker_setup_commands"])
    assert any("pip install -e" in c for c in config["head_setup_commands"])


def test_the_validator_would_catch_a_typo():
    config = cluster()
    config["available_node_types"]["gpu_1x_a10g"]["min_wrokers"] = 0
    with pytest.raises(ValidationError, match="min_wrokers"):
        validate_config(prepare_config(copy.deepcopy(config)))


def test_rayjob_runs_the_sweep_on_autoscaling_gpu_workers():
    job = yaml.safe_load((REPO / "configs" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["working_dir"] and env["pip"] and env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("sqlite:////")
    cluster_spec = spec["rayClusterSpec"]
    assert cluster_spec["enableInTreeAutoscaling"] is True
    (gpu,) = cluster_spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    groups = [cluster_spec["headGroupSpec"], gpu]
    images = [c["image"] for group in groups for c in group["template"]["spec"]["containers"]]
    assert set(images) == {IMAGE}
    # The entrypoint's config and overrides are valid for the sweep itself.
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["python", "jobs/sweep.py"]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    config = load(REPO / args[args.index("--config") + 1], overrides)
    assert config.resources.num_gpus == 1 and all(t.data.startswith("/data/") for t in config.tasks)
