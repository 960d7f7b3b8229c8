"""A method added as one new file, with no edit anywhere else, is picked up by configs,
a sweep (a Ray Data job whose workers import it) and the server.

The test copies the project's packages to a folder, writes one file into its
``pruning/methods``, and runs the real entry points there as users would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline.samples import write_task
from tests.jobs.test_sweep import child_env

REPO = Path(__file__).resolve().parents[2]

# The whole method: keep the span's first R tokens. Nothing else knows its name.
METHOD = '''
"""keep_first: the span's first R tokens (a test method)."""

import torch

from pruning.methods.registry import Param, Selection, register


@register("keep_first", signals=("num_tokens", "device"), default_layer=1,
          params={"offset": Param(int, 0, "tokens skipped before the kept ones", low=0)})
def select(num_tokens, num_retain, *, device="cpu", offset=0):
    start = min(offset, num_tokens - min(num_retain, num_tokens))
    return Selection(torch.arange(start, start + min(num_retain, num_tokens), device=device))
'''

SERVE = '''
import base64, io, json, socket, time, urllib.request
import ray
from ray import serve
from PIL import Image
from pipeline.serve import build

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(build({"model": "tiny:qwen2_vl", "method": "keep_first", "pruning_rate": 0.75, "default_max_tokens": 2}),
          name="chat", route_prefix="/")
buffer = io.BytesIO()
Image.new("RGB", (224, 224), (200, 30, 30)).save(buffer, format="PNG")
url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                  {"type": "text", "text": "Colour?"}]}],
        "pruning": {"method": "keep_first", "pruning_rate": 0.5, "offset": 3}}
deadline = time.monotonic() + 120
while True:
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            print("ANSWER " + response.read().decode())
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
serve.shutdown()
ray.shutdown()
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's packages with one new method file."""
    root = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("pipeline", "pruning", "jobs", "configs"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    (root / "pruning" / "methods" / "keep_first.py").write_text(METHOD)
    return root


def run(project: Path, *command: str, **env) -> subprocess.CompletedProcess:
    environment = child_env(PYTHONPATH=str(project), **env)
    return subprocess.run([sys.executable, *command], cwd=project, env=environment, capture_output=True,
                          text=True, timeout=900)


def test_configs_pick_up_the_new_method(project):
    done = run(project, "-c", textwrap.dedent("""
        from pruning import PruningConfig, list_methods
        config = PruningConfig.from_dict({"method": "keep_first", "pruning_rate": 0.5, "offset": 2})
        print(list_methods(), config.flat())
        PruningConfig.from_dict({"method": "keep_first", "pruning_rate": 0.5, "offset": -1})
    """))
    assert "keep_first" in done.stdout and "'params.offset': 2" in done.stdout, done.stderr[-3000:]
    assert "params.offset must be an integer >= 0, got -1" in done.stderr


def test_a_sweep_runs_the_new_method_on_ray_workers(project, tmp_path):
    data = write_task("pope", tmp_path / "samples", 2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny:qwen2_vl", "tasks": [{"name": "pope", "data": str(data), "limit": 2}],
        "grid": {"methods": ["keep_first"], "pruning_rates": [0.75]},
        "resources": {"actors": 1, "batch_size": 2}, "mlflow": {"experiment": "new-method"},
        "output": str(tmp_path / "rows")}))
    done = run(project, "jobs/sweep.py", "--config", str(config), MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    mlflow.set_tracking_uri(uri)
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["new-method"], output_format="list")}
    point = runs["keep_first-0.75"]
    assert point.data.params["method"] == "keep_first" and point.data.params["params.offset"] == "0"
    kept, before = point.data.metrics["visual_tokens_after"], point.data.metrics["visual_tokens_before"]
    assert 0 < kept < before and abs(kept - round(before * 0.25)) <= 1


def test_the_server_answers_with_the_new_method(project):
    done = run(project, "-c", SERVE)
    answer = [line for line in done.stdout.splitlines() if line.startswith("ANSWER ")]
    assert answer, (done.stdout + done.stderr)[-4000:]
    stats = json.loads(answer[0][len("ANSWER "):])["pruning"]
    assert stats["config"]["method"] == "keep_first" and stats["config"]["params.offset"] == 3
