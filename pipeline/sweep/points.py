"""What a sweep computes on its workers once a grid point's rows are stored: the point's
metrics and its predictions file, and the kept-token pictures. The driver gets back
metrics dicts and PNG bytes, never the rows.

    finish_point   every task's stored rows of one point -> ``<store>/_predictions/<key>.parquet``
                   (the MLflow artifact: tasks in the sweep's order, rows in each task's
                   order) and the point's metrics (``pipeline.sweep.metrics.point_metrics``)
    head           the first rows of one task in a predictions file, read without the rest
    picture        kept tokens drawn on a task's first samples, as PNG bytes
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.evaluate import plan_rows, summarize
from pipeline.job import Plan
from pipeline.store import RowStore
from pipeline.tasks import get_task

HEAD_ROWS = 64  # rows of a task the pictures choose their samples from


def predictions_path(store: str, point_key: str) -> str:
    return f"{RowStore(store).path}/_predictions/{point_key}.parquet"


def finish_point(plan: Plan, point: int, counts: dict, point_key: str, answered: dict,
                 seconds: float) -> tuple[dict, str]:
    """``(metrics, predictions file)`` of grid point ``point`` of ``plan``."""
    from pipeline.models import model_config
    from pipeline.sweep.metrics import point_metrics

    store = RowStore(plan.store)
    tables, results = [], {}
    for source in plan.sources:
        table = plan_rows(plan, source, point, counts[source.name])
        rows = table.to_pylist()
        results[source.name] = (summarize(get_task(source.name), rows, seconds,
                                          answered=answered.get(source.name, 0), scoring=plan.scoring), rows)
        tables.append(table)
    path = predictions_path(plan.store, point_key)
    store.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(pa.concat_tables(tables), path, filesystem=store.fs, row_group_size=1024)
    metrics = point_metrics(results, model_config(plan.model), plan.points[point])
    return metrics, path


def local_copy(store: str, path: str, target: Path) -> Path:
    """A copy of ``path`` (in ``store``'s filesystem) at the local ``target``, streamed."""
    with RowStore(store).fs.open_input_stream(path) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    return target


def head(path: Path, task: str, rows: int = HEAD_ROWS) -> list[dict]:
    """The first ``rows`` rows of ``task`` in a predictions file, read batch by batch."""
    out = []
    scanner = pads.dataset(str(path)).scanner(filter=pads.field("task") == task, batch_size=rows)
    for batch in scanner.to_batches():
        out += batch.to_pylist()
        if len(out) >= rows:
            break
    return out[:rows]


def picture(source, picks: Sequence[tuple[str, list[dict]]], frames: int,
            max_pixels: Optional[int]) -> Optional[bytes]:
    """Kept tokens of ``picks`` (label, the point's first rows of the task) drawn on the
    source's first samples (read here), as PNG bytes; None when nothing is visual."""
    from pipeline.sweep.report import kept_tokens_figure

    samples = _Samples(source)  # the figure reads only the few samples it draws
    with tempfile.TemporaryDirectory() as scratch:
        path = kept_tokens_figure(source.name, samples, picks, Path(scratch) / f"{source.name}.png",
                                  frames=frames, max_pixels=max_pixels)
        return path.read_bytes() if path else None


class _Samples:
    """A source's samples by index, each read when asked for."""

    def __init__(self, source):
        self.source = source

    def __getitem__(self, index: int):
        ((_, sample),) = self.source.samples(index, index + 1)
        return sample
