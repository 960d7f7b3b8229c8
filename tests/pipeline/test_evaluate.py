"""End to end on a local Ray cluster: an image set and a video set in their real layouts,
with a corrupt file and a missing file among them, through read -> decode -> infer ->
score; every input comes out exactly once, in order, the bad ones with an error."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import ray

from pipeline import evaluate
from pipeline.samples import main as write_samples
from pipeline.sources import task_source
from pruning import PruningConfig


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sample_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    write_samples(["--out", str(root), "--tasks", "pope", "egoschema", "--per-task", "3", "--corrupt"])
    return root


def expected_ids(task: str, data) -> list[str]:
    source = task_source(task, str(data))
    return [str(sample.id) for _, sample in source.samples(0, source.count())]


@pytest.mark.parametrize("task", ["pope", "egoschema"])
def test_every_sample_has_exactly_one_row(local_ray, sample_sets, tmp_path, task):
    ids = expected_ids(task, sample_sets / task)
    assert len(ids) == 5  # 3 good + one corrupt + one missing
    configs = [PruningConfig.none(), PruningConfig(method="vlm_pruner", pruning_rate=0.75)]
    resources = evaluate.Resources(batch_size=2, frames=8)
    results = evaluate.evaluate([task_source(task, str(sample_sets / task))], "tiny:qwen2_vl", configs,
                                tmp_path / "out", resources)[task]
    assert [r.config for r in results] == configs
    for result in results:
        rows = result.rows()
        assert [row["id"] for row in rows] == ids
        errors = [row for row in rows if row["error"]]
        assert len(errors) == 2, [row["error"] for row in rows]
        for row in rows:
            if row["error"]:
                assert row["score"] == 0.0 and row["output"] is None
            else:
                assert row["output"] is not None and row["visual_tokens_before"] > 0
        assert result.metrics["samples"] == 5 and result.metrics["errors"] == 2
        assert "score" in result.metrics
        assert set(evaluate.OUTPUT_COLUMNS) <= set(rows[0])
    unpruned, pruned = results
    assert pruned.metrics["visual_tokens_after"] < unpruned.metrics["visual_tokens_after"]
    assert unpruned.metrics["visual_tokens_after"] == unpruned.metrics["visual_tokens_before"]


def test_command_line_writes_predictions_and_summary(local_ray, sample_sets, tmp_path, capsys):
    out = tmp_path / "run"
    evaluate.main(["--task", "pope", "--data", str(sample_sets / "pope"), "--model", "tiny:qwen2_vl",
                   "--method", "divprune", "--pruning-rate", "0.5", "--out", str(out), "--batch-size", "3",
                   "--scoring", "lenient"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["method"] == "divprune" and summary["metrics"]["samples"] == 5
    # lmms-eval's metrics under their names, the lenient ones beside them under lenient/
    assert summary["scoring"] == "lmms_eval 0.7.3 + lenient"
    assert {"score", "f1", "unparsed", "lenient/score", "lenient/f1", "lenient/unparsed"} <= set(summary["metrics"])
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(rows) == 5
    assert all(r["lenient_score"] is not None for r in rows if not r["error"])
    # Each model call gets one full batch (the last the rest), not a batch and a remainder.
    calls = Counter((row["infer_started"], row["infer_finished"]) for row in rows)
    assert sorted(calls.values(), reverse=True) == [3, 2]
    assert "errors" in capsys.readouterr().out


@pytest.mark.parametrize("argv,field", [
    (["--method", "vlm_pruner", "--pruning-rate", "1.5"], "pruning_rate"),
    (["--method", "vlm_pruner", "--pruning-rate", "0.5", "--layer", "9"], "layer"),
    (["--method", "nope"], "method"),
])
def test_bad_config_is_refused_before_any_work(tmp_path, capsys, argv, field):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--task", "pope", "--data", str(tmp_path), "--out", str(tmp_path / "o")] + argv)
    assert exit_info.value.code == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_repository_download_runs_with_every_present_video_found(local_ray, tmp_path, monkeypatch, caplog):
    """Video-MME as `huggingface-cli download --local-dir` leaves it, zips unzipped in place
    (rows at videomme/test-00000-of-00001.parquet, videos in data/): every present video is
    decoded, the cut one and the missing one are the only error rows."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    write_samples(["--out", str(tmp_path / "sets"), "--tasks", "videomme", "--per-task", "2", "--corrupt",
                   "--layout", "repo", "--frames-per-video", "8"])
    out = tmp_path / "run"
    evaluate.main(["--task", "videomme", "--data", str(tmp_path / "sets" / "videomme"), "--model", "tiny:qwen2_vl",
                   "--frames", "4", "--out", str(out), "--batch-size", "2"])
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    errors = [row["error"] for row in rows]
    assert len(rows) == 4 and errors[:2] == [None, None], errors
    assert all(row["visual_tokens_before"] > 0 for row in rows[:2])  # the .mp4 and the .mkv were decoded
    assert errors[2].startswith("video: cannot open video ") and "/videomme/data/" in errors[2]
    assert errors[3].startswith(f"missing video: tried {tmp_path}/sets/videomme/videomme/data/")
    assert not [r for r in caplog.records if r.name == "pipeline.evaluate"]
