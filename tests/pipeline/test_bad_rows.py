"""Nothing in one row ends a run: nulls, numbers where text belongs, undecodable bytes and
answers out of range each become that row's error (a deterministic message), the other
rows are answered, and every input row gives exactly one output row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from pipeline import evaluate
from pipeline.samples import write_task
from pipeline.sources import task_source
from pruning import PruningConfig


def rewrite(path, edit) -> None:
    """The parquet file at ``path`` with ``edit(rows) -> rows`` applied (schema re-inferred
    where a column's type changes)."""
    rows = edit(pq.read_table(path).to_pylist())
    pq.write_table(pa.Table.from_pylist(rows), path)


def pope_with_bad_rows(root):
    """3 good POPE rows, then a null question, a null answer and a question that is not
    UTF-8; the questions are a binary column, as a file with one broken string has it."""
    data = write_task("pope", root, 3)
    (path,) = data.rglob("*.parquet")
    table = pq.read_table(path)
    good = table.to_pylist()
    rows = good + [dict(good[0], question=None), dict(good[1], answer=None), dict(good[2])]
    questions = [r["question"].encode() if r["question"] is not None else None for r in rows]
    questions[5] = b"\xff\xfe is there a cat?"
    columns = {k: pa.array([r[k] for r in rows], table.schema.field(k).type) for k in table.column_names}
    columns["question"] = pa.array(questions, pa.binary())
    pq.write_table(pa.table(columns).replace_schema_metadata(None), path)
    return data


EXPECTED_POPE = [None, None, None, "row: question is missing", "row: answer is missing",
                 "row: question is not UTF-8 text"]


def test_each_bad_pope_row_is_its_own_error(tmp_path):
    source = task_source("pope", str(pope_with_bad_rows(tmp_path)))
    samples = list(source.samples(0, source.count()))
    assert [i for i, _ in samples] == list(range(6))
    assert [s.error for _, s in samples] == EXPECTED_POPE
    assert samples[0][1].prompt.startswith("Is there")  # the good ones' bytes decoded to text


def test_bad_egoschema_rows(tmp_path):
    data = write_task("egoschema", tmp_path, 2)
    (path,) = data.glob("*.parquet")
    rewrite(path, lambda rows: rows + [dict(rows[0], answer="B"), dict(rows[1], question=None),
                                       dict(rows[0], answer="7"), dict(rows[1], answer=None)])
    source = task_source("egoschema", str(data))
    errors = [s.error for _, s in source.samples(0, source.count())]
    assert errors == [None, None, "row: answer must be an option index 0-4, got 'B'", "row: question is missing",
                      "row: answer must be an option index 0-4, got '7'",
                      "no answer (EgoSchema's full config is scored online; use config Subset)"]


@pytest.mark.parametrize("task,field", [("videomme", "answer"), ("nextqa", "answer"), ("egoplan", "golden_choice_idx")])
def test_an_answer_out_of_range_is_an_error(tmp_path, task, field):
    data = write_task(task, tmp_path, 1)
    (path,) = [p for p in data.rglob("*.parquet")]
    rewrite(path, lambda rows: rows + [dict(rows[0], **{field: "Z" if task != "nextqa" else 9})])
    source = task_source(task, str(data))
    errors = [s.error for _, s in source.samples(0, source.count())]
    assert errors[0] is None and errors[1].startswith(f"row: {field} must be one of ")


def test_a_run_over_bad_rows_answers_the_good_ones(tmp_path):
    data = pope_with_bad_rows(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ((result,),) = evaluate.evaluate([task_source("pope", str(data))], "tiny:qwen2_vl",
                                         [PruningConfig.none()], tmp_path / "out",
                                         evaluate.Resources(batch_size=2)).values()
    finally:
        ray.shutdown()
    rows = result.rows()
    assert [r["error"] for r in rows] == EXPECTED_POPE
    assert all(r["output"] is not None for r in rows[:3])
    assert result.metrics["samples"] == 6 and result.metrics["errors"] == 3
