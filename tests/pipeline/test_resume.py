"""An evaluation killed mid-run (SIGKILL to the driver and the local Ray it started, as a
lost node) loses only the rows in flight: the rerun answers exactly the rows that were
not stored, and ends with the rows of an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.samples import write_task

REPO = Path(__file__).resolve().parents[2]
SAMPLES = 40
# Columns that must be equal between runs (timings differ).
SAME = ["index", "id", "prompt", "output", "parsed", "score", "error", "visual_tokens_before",
        "visual_tokens_after", "kept", "new_tokens"]


def command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.evaluate", "--task", "pope", "--data", str(data), "--out", str(out),
            "--model", "tiny:qwen2_vl", "--method", "vlm_pruner", "--pruning-rate", "0.75", "--batch-size", "2"]


def environment() -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return env


def stored_rows(out: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (out / "rows").rglob("part-*.parquet"))


def finished(data: Path, out: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command(data, out), cwd=REPO, env=environment(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_task("pope", tmp_path_factory.mktemp("sets"), SAMPLES)


def test_a_killed_run_loses_only_rows_in_flight(data, tmp_path):
    reference = finished(data, tmp_path / "reference")
    assert "0 stored" in reference.stderr

    out = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "w")
    victim = subprocess.Popen(command(data, out), cwd=REPO, env=environment(), stdout=log, stderr=log,
                              start_new_session=True)
    deadline = time.monotonic() + 600
    while (out / "rows").exists() is False or stored_rows(out) < SAMPLES // 3:
        assert victim.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no rows stored in time"
        time.sleep(0.5)
    os.killpg(victim.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
    victim.wait()
    log.close()
    kept = stored_rows(out)
    assert SAMPLES // 3 <= kept < SAMPLES

    rerun = finished(data, out)
    computed, stored = map(int, re.search(r"(\d+) \(row, point\) answers to compute, (\d+) stored",
                                          rerun.stderr).groups())
    assert (computed, stored) == (SAMPLES - kept, kept)  # nothing stored is redone, nothing is lost

    ours = pq.read_table(out / "predictions.parquet", columns=SAME).to_pylist()
    theirs = pq.read_table(tmp_path / "reference" / "predictions.parquet", columns=SAME).to_pylist()
    assert len(ours) == SAMPLES and ours == theirs
