"""The annotation job on a local Ray cluster: real image files, a real mp4 and a corrupt
file in a folder, and a parquet column; one row per input, resumable after an interruption."""

from __future__ import annotations

import json
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from jobs import annotate
from pipeline.samples import GARBAGE, shape_image, video_frames, write_video

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--prompt", "Describe it.", "--model", "tiny:qwen2_vl", "--method", "vlm_pruner",
        "--pruning-rate", "0.75", "--frames", "4", "--max-new-tokens", "2", "--batch-size", "2",
        "--chunk-size", "2"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def write_folder(root: Path) -> Path:
    """a.png, nested/b.jpg, nested/deeper/c.png, broken.png (garbage), clip.mp4, notes.txt (ignored)."""
    (root / "nested" / "deeper").mkdir(parents=True)
    shape_image("red", "circle").save(root / "a.png")
    shape_image("blue", "square").save(root / "nested" / "b.jpg")
    shape_image("green", "triangle").save(root / "nested" / "deeper" / "c.png")
    (root / "broken.png").write_bytes(GARBAGE)
    write_video(root / "clip.mp4", video_frames("yellow", "right", 16))
    (root / "notes.txt").write_text("not an input")
    return root


def rows(out: Path) -> dict:
    return {r["id"]: r for r in pq.read_table(out / "annotations.parquet").to_pylist()}


def test_folder_gives_one_row_per_file_and_the_corrupt_one_its_error(local_ray, tmp_path):
    data, out = write_folder(tmp_path / "data"), tmp_path / "out"
    summary = annotate.main(["--data", str(data), "--out", str(out), *ARGS])
    assert summary["processed"] == 5 and summary["already_done"] == 0 and summary["errors"] == 1
    table = rows(out)
    assert list(table) == ["a.png", "broken.png", "clip.mp4", "nested/b.jpg", "nested/deeper/c.png"]
    assert "broken.png" in table["broken.png"]["error"] and table["broken.png"]["output"] is None
    assert table["clip.mp4"]["kind"] == "video"
    for item_id, row in table.items():
        if item_id != "broken.png":
            assert row["error"] is None and isinstance(row["output"], str), row
            assert 0 < row["visual_tokens_after"] < row["visual_tokens_before"]
            assert row["prefill_s"] > 0 and row["method"] == "vlm_pruner" and row["pruning_rate"] == 0.75
    assert len(list((out / "rows").rglob("part-*.parquet"))) == 3  # chunks of 2
    assert json.loads((out / "summary.json").read_text())["annotated"] == 5


def test_a_rerun_resumes_after_an_interruption(local_ray, tmp_path):
    data, out = write_folder(tmp_path / "data"), tmp_path / "out"
    first = annotate.main(["--data", str(data), "--out", str(out), *ARGS])
    assert first["processed"] == 5
    before = rows(out)

    # Interrupted: a part never written. Meanwhile two files arrive.
    lost = sorted((out / "rows").rglob("part-*.parquet"))[1]
    lost_ids = set(pq.read_table(lost, columns=["id"]).column("id").to_pylist())
    lost.unlink()
    shape_image("purple", "circle").save(data / "new1.png")
    write_video(data / "nested" / "new2.mp4", video_frames("red", "left", 8))

    second = annotate.main(["--data", str(data), "--out", str(out), *ARGS])
    assert second["processed"] == len(lost_ids) + 2
    assert second["already_done"] == 5 - len(lost_ids) and second["inputs"] == 7
    after = rows(out)
    assert len(after) == 7 and {"new1.png", "nested/new2.mp4"} <= set(after)
    for item_id, row in before.items():  # rows not redone are kept as they were
        if item_id not in lost_ids:
            assert after[item_id] == row

    third = annotate.main(["--data", str(data), "--out", str(out), *ARGS])
    assert third["processed"] == 0 and third["parts_written"] == 0 and len(rows(out)) == 7

    # --retry-errors redoes the corrupt file only (still an error: one row for it).
    retried = annotate.main(["--data", str(data), "--out", str(out), *ARGS, "--retry-errors"])
    assert retried["processed"] == 1 and retried["errors"] == 1 and len(rows(out)) == 7


def test_other_settings_refuse_the_output_directory(tmp_path):
    data, out = write_folder(tmp_path / "data"), tmp_path / "out"
    job = annotate.Job(data=str(data), prompt="Describe it.", model="tiny:qwen2_vl", out=str(out))
    annotate.check_settings(out, job)
    with pytest.raises(ValueError, match="prompt"):
        annotate.check_settings(out, annotate.Job(data=str(data), prompt="Other.", model="tiny:qwen2_vl",
                                                  out=str(out)))


def test_parquet_column_of_bytes_dicts_and_paths(local_ray, tmp_path):
    def png(colour):
        buffer = BytesIO()
        shape_image(colour, "square").save(buffer, format="PNG")
        return buffer.getvalue()

    write_video(tmp_path / "clip.mp4", video_frames("blue", "left", 8))
    table = pa.table({"image": [{"bytes": png("red"), "path": None}, {"bytes": None, "path": "clip.mp4"},
                                {"bytes": GARBAGE, "path": None}, {"bytes": png("green"), "path": "x.png"}]})
    pq.write_table(table, tmp_path / "set.parquet")
    summary = annotate.main(["--data", str(tmp_path / "set.parquet"), "--out", str(tmp_path / "out"), *ARGS])
    assert summary["processed"] == 4 and summary["errors"] == 1
    got = rows(tmp_path / "out")
    assert list(got) == ["0", "1", "2", "3"]
    assert got["1"]["kind"] == "video" and got["1"]["error"] is None
    assert got["2"]["error"] and got["0"]["error"] is None and got["3"]["error"] is None


def test_help_and_a_bad_column_as_a_script(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        annotate.main(["--help"])
    shown = capsys.readouterr().out
    assert exit_.value.code == 0 and "--pruning-rate" in shown and "Resume" in shown
    # As a script from the repo root (the job puts the repo on sys.path itself).
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "t.parquet")
    bad = subprocess.run([sys.executable, "jobs/annotate.py", "--data", str(tmp_path / "t.parquet"),
                          "--out", str(tmp_path / "o"), "--prompt", "p", "--model", "tiny:qwen2_vl"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--column is required" in bad.stderr, bad.stderr
