"""Faults a long run meets, each reproduced for real: an input whose read never returns
(a FIFO: what a stalled network mount looks like), a model that fails on every batch, a
request for GPUs a local cluster lacks, bad options. Each ends in an error row or a
clear refusal: never a hang, a crash of the whole run, or a silent exit 0."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest
import ray

from jobs.annotate import main as annotate_main
from pipeline import evaluate
from pipeline.job import LOST
from pipeline.models import tiny_checkpoint
from pipeline.samples import shape_image, write_task
from pipeline.stages import error_text


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    return write_task("pope", tmp_path_factory.mktemp("pope"), 2)


@pytest.mark.parametrize("argv,words", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--dtype", "float13"], "--dtype"),
    (["--frames", "0"], "--frames must be an integer >= 1"),
    (["--max-pixels", "0"], "--max-pixels must be an integer >= 1"),
    (["--actors", "0"], "--actors must be an integer >= 1"),
    (["--num-gpus", "-1"], "--num-gpus must be a number >= 0"),
    (["--sample-timeout", "-5"], "--sample-timeout must be a number >= 0"),
    (["--limit", "0"], "--limit must be an integer >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1"),
    (["--method", "vlm_pruner", "--pruning-rate", "0.5", "--param", "token_batch=abc"], "token_batch"),
    (["--method", "vlm_pruner", "--pruning-rate", "0.5", "--param", "token_batch"], "NAME=VALUE"),
    (["--data", "/nonexistent/pope"], "--data: '/nonexistent/pope' is no file or folder"),
    (["--data", "EMPTY"], "holds no .parquet"),
])
def test_evaluate_refuses_a_bad_option_before_ray_starts(pope, tmp_path, capsys, argv, words):
    (tmp_path / "empty").mkdir()
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    base = ["--task", "pope", "--out", str(tmp_path / "out")] + ([] if "--data" in argv else ["--data", str(pope)])
    with pytest.raises(SystemExit) as info:
        evaluate.main(base + argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,words", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--chunk-size", "0"], "--chunk-size must be an integer >= 1"),
    (["--num-gpus", "-1"], "--num-gpus must be a number >= 0"),
    (["--dtype", "float13"], "--dtype"),
])
def test_annotate_refuses_a_bad_option_before_ray_starts(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        annotate_main(["--data", str(tmp_path), "--prompt", "Describe.", "--model", "tiny:qwen2_vl",
                       "--out", str(tmp_path / "out")] + argv)
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert not ray.is_initialized()


def test_error_text_is_the_same_run_to_run():
    a = "cannot identify image file <_io.BytesIO object at 0x7f3a2c1d9e40> (2026-12-02 19:41:07,123)"
    b = "cannot identify image file <_io.BytesIO object at 0x7fe001122330> (2026-12-03T08:00:00.5)"
    assert error_text(a) == error_text(b) == "cannot identify image file <_io.BytesIO object> (<time>)"


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_an_input_whose_read_never_returns_becomes_an_error_row(local_ray, tmp_path):
    """A FIFO with no writer blocks ``read_bytes`` forever, in C: the sample's deadline kills
    the worker, its block is retried, set aside, its rows answered one per task, and the
    one that still hangs is stored as a LOST row; the others are answered."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, colour in [("a.png", "red"), ("c.png", "blue")]:
        shape_image(colour, "circle").save(folder / name)
    os.mkfifo(folder / "b.png")
    summary = annotate_main(["--data", str(folder), "--prompt", "What colour?", "--model", "tiny:qwen2_vl",
                             "--out", str(tmp_path / "out"), "--max-new-tokens", "2", "--sample-timeout", "2"])
    rows = {r["id"]: r for r in pq.read_table(summary["annotations"]).to_pylist()}
    assert sorted(rows) == ["a.png", "b.png", "c.png"]
    assert rows["b.png"]["error"] == LOST
    assert rows["a.png"]["error"] is None and rows["c.png"]["error"] is None
    assert rows["a.png"]["output"] is not None
    assert summary["errors"] == 1


def test_a_model_that_fails_every_batch_stops_the_run_with_exit_1(local_ray, tmp_path, capsys):
    """A checkpoint whose embedding table is smaller than its tokenizer (the image tokens
    are out of it: every forward raises IndexError, as a sticky device error would fail
    every call): the actor is replaced after a few
    failed batches, and when its replacements fail too the run stops with exit code 1
    and the cause, instead of writing an error row for every sample."""
    import torch
    from transformers import AutoModelForImageTextToText

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint("qwen2_vl"), broken)
    model = AutoModelForImageTextToText.from_pretrained(broken, dtype=torch.float32)
    model.resize_token_embeddings(1201)  # the pad token stays in, the image tokens not
    model.save_pretrained(broken)
    data = write_task("pope", tmp_path / "data", 60)
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--task", "pope", "--data", str(data), "--model", str(broken), "--out", str(tmp_path / "out"),
                       "--batch-size", "1", "--max-new-tokens", "1"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "stopping: the model failed on each of the last" in err and "IndexError" in err, err[-2000:]
    assert "60/60" not in err  # it stopped: the rest were not written as error rows


def test_a_model_that_cannot_load_stops_the_run_with_exit_1(local_ray, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint("qwen2_vl"), broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    data = write_task("pope", tmp_path / "data", 2)
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--task", "pope", "--data", str(data), "--model", str(broken), "--out", str(tmp_path / "out")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "the model's actors died" in err, err[-2000:]


def test_gpus_a_local_cluster_lacks_are_refused(local_ray, pope, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--task", "pope", "--data", str(pope), "--out", str(tmp_path / "out"), "--num-gpus", "1"])
    assert info.value.code == 1
    assert "each actor asks for 1 GPUs, but this local Ray cluster has 0" in capsys.readouterr().err


def test_error_rows_are_deterministic_across_runs(local_ray, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "empty.mp4").write_bytes(b"")
    errors = []
    for run in ("one", "two"):
        summary = annotate_main(["--data", str(folder), "--prompt", "?", "--model", "tiny:qwen2_vl",
                                 "--out", str(tmp_path / run), "--max-new-tokens", "1"])
        errors.append([r["error"] for r in pq.read_table(summary["annotations"]).to_pylist()])
    assert errors[0] == errors[1] and all(errors[0]), errors
    assert not any("0x" in e for e in errors[0]), errors
