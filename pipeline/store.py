"""The results store: every answered row on disk, written by the workers as they go.

Layout under the store's root (a local or shared path, or any URI pyarrow's
filesystems take: ``s3://bucket/prefix``, ``gs://...``)::

    <source>/<key>/part-<uuid>.parquet     SCORED rows (pipeline.rows) of one source (task)
                                           under one grid point

``key`` (:func:`rows_key`) is a hash of everything that decides those rows: the model,
the source (task, data, media root...), the model inputs, the point's full pruning
config and the scoring (with its lmms-eval release); so any run that would compute the
same rows finds them, and a changed setting never reuses stale ones. Files are written under a temporary name and then
moved into place: a file is whole or absent, so an interruption loses at most the rows
in flight. A row written twice (a retried task) is read once (:meth:`RowStore.read`).

What is done is read back from the files, not kept by the driver: :meth:`RowStore.done`
gives a boolean mask over a source's rows (one bit a row), and the read stage skips the
(row, point) pairs already in the store: a rerun continues where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, is_dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import rows as contract

# Bump when what a stored row means changes (prompts, scoring, columns): old rows are
# then never reused. 2: lmms-eval's prompts, generation and scoring; stop strings; lenient columns.
ROWS_VERSION = 2


def rows_key(model: str, source, inputs: dict, point: dict, scoring: str = "") -> str:
    """The stable hash naming the stored rows of ``source`` under ``point``, scored by
    ``scoring`` (``pipeline.tasks.scoring.scoring_label``)."""
    payload = {"version": ROWS_VERSION, "model": model,
               "source": asdict(source) if is_dataclass(source) else source, "inputs": inputs, "point": point,
               "scoring": scoring}
    payload["source"] = {k: v for k, v in payload["source"].items() if k != "limit"}  # rows are rows
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


class RowStore:
    """Parquet parts of SCORED rows under ``root`` (see the module docstring)."""

    def __init__(self, root: str):
        self.root = str(root)
        self.fs, path = pafs.FileSystem.from_uri(self.root) if "://" in self.root else \
            (pafs.LocalFileSystem(), _absolute(self.root))
        self.path = path.rstrip("/")

    def __reduce__(self):  # pickled into Ray tasks by its root alone
        return (RowStore, (self.root,))

    def directory(self, source: str, key: str) -> str:
        return f"{self.path}/{source}/{key}"

    def write(self, table: pa.Table, source: str, key: str) -> str:
        """One part file of ``table`` for ``source`` under ``key``, whole or not at all."""
        directory = self.directory(source, key)
        self.fs.create_dir(directory, recursive=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        scratch, final = f"{directory}/.{name}.tmp", f"{directory}/{name}"
        pq.write_table(table, scratch, filesystem=self.fs)
        self.fs.move(scratch, final)
        return final

    def parts(self, source: str, key: str) -> list[str]:
        selector = pafs.FileSelector(self.directory(source, key), allow_not_found=True)
        return sorted(info.path for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.File and info.base_name.startswith("part-")
                      and info.base_name.endswith(".parquet"))

    def read(self, source: str, key: str, *, count: Optional[int] = None,
             columns: Optional[Sequence[str]] = None) -> pa.Table:
        """The stored rows, one per index, sorted by index; only indices below ``count``
        when given. An index stored twice (a retried task, or ``--retry-errors``) gives
        its row without an error when there is one."""
        parts = self.parts(source, key)
        wanted = list(columns) if columns is not None else contract.names(contract.SCORED)
        wanted = list(dict.fromkeys(["index", "error", *wanted]))
        if not parts:
            return contract.schema([c for c in contract.SCORED if c.name in wanted]).empty_table()
        types = {c.name: c.type for c in contract.SCORED}
        table = pa.concat_tables([self._read_part(p, wanted, types) for p in parts])
        if count is not None:
            table = table.filter(pc.less(table["index"], count))
        index = table["index"].to_numpy()
        failed = table["error"].is_valid().to_numpy(zero_copy_only=False)
        order = np.lexsort((failed, index))  # by index, rows without an error first
        _, first = np.unique(index[order], return_index=True)
        table = table.take(pa.array(order[first]))
        return table if columns is None or "error" in columns else table.drop_columns(["error"])

    def _read_part(self, path: str, wanted: Sequence[str], types: dict) -> pa.Table:
        """One part's ``wanted`` columns (opened once: its footer gives the columns it has);
        a column the part predates (written by an earlier release, e.g. ``shared_s``) is
        read as nulls of its ``types`` entry."""
        part = pq.ParquetFile(path, filesystem=self.fs)
        have = set(part.schema_arrow.names)
        table = part.read(columns=[c for c in wanted if c in have])
        for name in wanted:
            if name not in have:
                table = table.append_column(pa.field(name, types.get(name, pa.null())),
                                            pa.nulls(table.num_rows, types.get(name, pa.null())))
        return table.select(list(wanted))

    def done(self, source: str, key: str, count: int, *, keep_errors: bool = True) -> np.ndarray:
        """(count,) bool: which of the source's rows are stored under ``key``; with
        ``keep_errors=False`` a row stored with an error does not count as done."""
        mask = np.zeros(count, dtype=bool)
        columns = ["index"] if keep_errors else ["index", "error"]
        for part in self.parts(source, key):
            table = pq.read_table(part, columns=columns, filesystem=self.fs)
            if not keep_errors:
                table = table.filter(pc.is_null(table["error"]))
            index = table["index"].to_numpy()
            mask[index[index < count]] = True
        return mask


def _absolute(path: str) -> str:
    from pathlib import Path

    return str(Path(path).expanduser().resolve())
