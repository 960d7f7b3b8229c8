"""Where the pipeline's samples come from. A source is a small, picklable description;
its rows are counted and read on Ray workers, a range at a time, so the driver never
holds a sample or an image.

    TaskSource   a benchmark's rows (a local copy in its layout, or a hub id in the HF
                 cache), turned into Samples by the task (prompt, media, gold answer)
    InputsSource the inputs of an annotation job: a parquet table of (id, kind, path or
                 image bytes) that jobs/annotate.py writes once per output directory

``count()`` says how many rows there are; ``samples(start, stop)`` gives ``(index,
Sample)`` for rows ``start <= index < stop``. The index is a row's position in its
source, the key under which its results are stored and resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from pipeline.tasks import Sample, get_task


@dataclass(frozen=True)
class TaskSource:
    """A benchmark task's rows: ``task.rows(data, limit)``, ``task.sample(row)`` each."""

    task: str
    data: str  # an absolute local path, or a hub id
    limit: Optional[int] = None
    media_root: Optional[str] = None  # where media files live (default: the rows' own, see the task)
    max_new_tokens: Optional[int] = None  # instead of the task's generation budget (smoke tests, benchmarks)

    @property
    def name(self) -> str:
        return self.task

    @property
    def scored(self) -> bool:
        return True

    def count(self) -> int:
        return get_task(self.task).count(self.data, limit=self.limit)

    def samples(self, start: int, stop: int) -> Iterator[tuple[int, Sample]]:
        task = get_task(self.task)
        for row in task.rows(self.data, limit=self.limit, start=start, stop=stop):
            index = int(row["_index"])
            problem = task.check_row(row)
            try:
                sample = task.sample(row, media_root=self.media_root) if problem is None else None
            except Exception as exc:  # whatever else a row holds that the task cannot read
                problem = f"row: {type(exc).__name__}: {exc}"
            if problem is not None:  # nothing in one row ends the run: it is that row's error
                sample = Sample(id=f"row {index}", prompt="", error=problem)
            if self.max_new_tokens is not None:
                sample.max_new_tokens = self.max_new_tokens
            yield index, sample


def task_source(task: str, data: str, *, limit: Optional[int] = None, media_root: Optional[str] = None,
                max_new_tokens: Optional[int] = None) -> TaskSource:
    """A :class:`TaskSource`, a local ``data`` path made absolute (workers may run
    elsewhere) and, for a local path, media looked up next to it unless ``media_root``
    says otherwise."""
    path = Path(data).expanduser()
    if path.exists():
        data = str(path.resolve())
        if media_root is None:
            media_root = data if path.is_dir() else str(path.resolve().parent)
    return TaskSource(task, data, limit, str(Path(media_root).resolve()) if media_root else None,
                      max_new_tokens)


@dataclass(frozen=True)
class InputsSource:
    """The inputs of an annotation job (``jobs/annotate.py``): rows of ``table`` (a parquet
    file of id, kind, path, data, error), each asked ``prompt``."""

    table: str
    prompt: str
    max_new_tokens: int = 64

    name = "annotate"
    scored = False

    def count(self) -> int:
        import pyarrow.parquet as pq

        return pq.read_metadata(self.table).num_rows

    def samples(self, start: int, stop: int) -> Iterator[tuple[int, Sample]]:
        import pyarrow.parquet as pq

        table = pq.ParquetFile(self.table)
        rows = table.read_row_groups(_row_groups(table, start, stop)) if stop > start else None
        offset = _first_row(table, start)
        for i, item in enumerate(rows.to_pylist() if rows is not None else [], start=offset):
            if not start <= i < stop:
                continue
            images, error = [], item["error"]
            if item["kind"] == "image" and not error:
                if item["data"] is not None:
                    images = [item["data"]]
                else:
                    data, error = _read_image_file(item["path"])
                    images = [data] if data is not None else []
            yield i, Sample(id=item["id"], prompt=self.prompt, images=images,
                            video=item["path"] if item["kind"] == "video" else None, error=error,
                            meta={"kind": item["kind"], "source": item["source"]},
                            max_new_tokens=self.max_new_tokens)


def _read_image_file(path: str) -> tuple[Optional[bytes], Optional[str]]:
    """``(bytes, None)`` of an image file, or ``(None, error)`` naming it when it cannot be
    read or is no image (checked from its header and structure, not decoded in full)."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"image: cannot read {path}: {exc.strerror or exc}"
    try:
        with Image.open(BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # PIL raises several types for broken files
        detail = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        return None, f"image: cannot decode {path}: {detail}"
    return data, None


def _row_groups(table, start: int, stop: int) -> list[int]:
    groups, first = [], 0
    for g in range(table.num_row_groups):
        n = table.metadata.row_group(g).num_rows
        if first < stop and first + n > start:
            groups.append(g)
        first += n
    return groups


def _first_row(table, start: int) -> int:
    first = 0
    for g in range(table.num_row_groups):
        n = table.metadata.row_group(g).num_rows
        if first + n > start:
            return first
        first += n
    return first
