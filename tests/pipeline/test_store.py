"""The results store: parts written whole, read back one row per index (a row without an
error preferred), done masks, keys that change with what decides a row."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline import rows as contract
from pipeline.sources import TaskSource
from pipeline.store import RowStore, rows_key


def scored(indices, error=None, output="x"):
    return contract.table([{"index": i, "task": "pope", "id": str(i), "point": 0, "error": error,
                            "output": None if error else f"{output}{i}", "score": 1.0} for i in indices],
                          contract.SCORED)


@pytest.fixture(params=["path", "uri"])
def store(request, tmp_path):
    return RowStore(str(tmp_path / "rows") if request.param == "path" else (tmp_path / "rows").as_uri())


def test_parts_are_read_back_sorted_and_once(store):
    store.write(scored([4, 5, 6]), "pope", "k")
    store.write(scored([0, 1, 2, 3]), "pope", "k")
    store.write(scored([2, 3]), "pope", "k")  # a retried task wrote these again
    table = store.read("pope", "k")
    assert table["index"].to_pylist() == list(range(7))
    assert store.read("pope", "k", count=3)["index"].to_pylist() == [0, 1, 2]
    assert store.read("pope", "other").num_rows == 0
    assert store.read("pope", "k", columns=["output"]).column_names == ["index", "output"]


def test_a_row_without_an_error_wins_over_its_error_row(store):
    store.write(scored([0, 1], error="video: missing"), "pope", "k")
    store.write(scored([1]), "pope", "k")  # --retry-errors answered row 1 again
    rows = store.read("pope", "k").to_pylist()
    assert [(r["index"], r["error"]) for r in rows] == [(0, "video: missing"), (1, None)]


def test_done_masks_with_and_without_error_rows(store):
    store.write(scored([0, 2]), "pope", "k")
    store.write(scored([3], error="model: boom"), "pope", "k")
    assert store.done("pope", "k", 5).tolist() == [True, False, True, True, False]
    assert store.done("pope", "k", 5, keep_errors=False).tolist() == [True, False, True, False, False]
    assert store.done("pope", "k", 2).tolist() == [True, False]  # rows past the count are ignored


def test_writes_leave_no_temporary_files(tmp_path):
    store = RowStore(str(tmp_path))
    path = store.write(scored([0]), "pope", "k")
    assert pq.read_table(path).num_rows == 1
    assert [p.name for p in (tmp_path / "pope" / "k").iterdir()] == [path.rsplit("/", 1)[1]]
    (tmp_path / "pope" / "k" / ".part-x.parquet.tmp").write_bytes(b"half")  # an interrupted write
    assert store.parts("pope", "k") == [path]


def test_keys_follow_what_decides_the_rows():
    source = TaskSource("pope", "/data/pope", limit=10)
    point = {"method": "vlm_pruner", "pruning_rate": 0.889}
    key = rows_key("tiny:qwen2_vl", source, {"frames": 8}, point)
    assert key == rows_key("tiny:qwen2_vl", TaskSource("pope", "/data/pope", limit=20), {"frames": 8}, point)
    assert key != rows_key("tiny:llava", source, {"frames": 8}, point)
    assert key != rows_key("tiny:qwen2_vl", source, {"frames": 16}, point)
    assert key != rows_key("tiny:qwen2_vl", source, {"frames": 8}, {**point, "pruning_rate": 0.778})
    assert key != rows_key("tiny:qwen2_vl", TaskSource("pope", "/data/pope", media_root="/m"), {"frames": 8},
                           point)
