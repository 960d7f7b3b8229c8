"""The pipeline's row contract: the columns each stage gives, declared once.

    ranges    RANGE     one source's rows [start, stop): what the read stage is handed
    read      READ      one sample, to be answered under the grid points in ``points``
    decode    DECODED   READ with the media replaced by the model's prepared ``inputs``
    infer     ANSWERED  one row per (sample, point): the answer, tokens and timings
    score     SCORED    ANSWERED with ``parsed`` and ``score``: what the results store holds
    write     WRITTEN   one row per file written: which source and point, how many rows

Grid points travel as small integers (``point``, ``points``) into the config table the
infer stage is given; ``answer`` and ``meta`` are the task's own JSON values. Each
stage checks its input columns with :func:`require` and builds its output with
:func:`table`, so a column is added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    help: str


def _columns(*specs: tuple[str, pa.DataType, str]) -> tuple[Column, ...]:
    return tuple(Column(*spec) for spec in specs)


RANGE = _columns(
    ("source", pa.string(), "the source (benchmark task, or 'annotate') the rows come from"),
    ("start", pa.int64(), "first row index"),
    ("stop", pa.int64(), "one past the last row index"),
)

_SAMPLE = _columns(
    ("index", pa.int64(), "the row's position in its source: the key results are stored and resumed by"),
    ("task", pa.string(), "the source's name"),
    ("id", pa.string(), "the sample's id (the benchmark's own where it has one)"),
    ("prompt", pa.string(), "the user text the model gets"),
)
_GOLD = _columns(
    ("answer", pa.string(), "the gold answer, JSON"),
    ("meta", pa.string(), "what scoring needs besides the answer (category, options, ...), JSON"),
    ("error", pa.string(), "why the sample could not be answered, or null"),
)

READ = _SAMPLE + (
    Column("images", pa.list_(pa.binary()), "encoded image files, in prompt order"),
    Column("video", pa.string(), "path of the video file, or null"),
) + _GOLD + _columns(
    ("max_new_tokens", pa.int64(), "generation budget (null: the model's default, pipeline.infer)"),
    ("until", pa.list_(pa.string()), "stop strings (lmms-eval's until): the answer ends before the first"),
    ("points", pa.list_(pa.int32()), "the grid points (ids into the infer stage's table) still to answer"),
)

DECODED = tuple(c for c in READ if c.name not in ("images", "video")) + (
    Column("inputs", pa.binary(), "the processor's output for this sample alone (pickled pipeline.infer.Prepared)"),
)

ANSWER = _columns(
    ("output", pa.string(), "the model's text, or null"),
    ("visual_tokens_before", pa.int64(), "visual tokens before pruning (all spans)"),
    ("visual_tokens_after", pa.int64(), "visual tokens after pruning"),
    ("kept", pa.string(), "per span, the kept indices into its grid, JSON"),
    ("spans", pa.string(), "per span, {kind, grid}, JSON"),
    ("new_tokens", pa.int64(), "tokens generated"),
    ("prompt_tokens", pa.int64(), "prompt tokens (visual included) before pruning"),
    ("ttft_s", pa.float64(), "the batch's time to first token"),
    ("prefill_s", pa.float64(), "the batch's prefill (first forward)"),
    ("decode_s_per_token", pa.float64(), "the batch's decode time per step"),
    ("select_s", pa.float64(), "the batch's selection time"),
    ("peak_memory_mb", pa.float64(), "CUDA peak allocated (or the actor's peak RSS on CPU)"),
    ("generate_s", pa.float64(), "the batch's whole generate() call"),
    ("batch_size", pa.int64(), "samples in that call"),
    ("shared_s", pa.float64(), "of the batch's timings, the seconds computed once for all its grid points "
                               "(vision encoder, lower layers: pipeline/prefix.py) and counted in"),
    ("infer_started", pa.float64(), "epoch seconds: the actor call began"),
    ("infer_finished", pa.float64(), "epoch seconds: the actor call ended"),
)
ANSWERED = _SAMPLE + _GOLD + (Column("point", pa.int32(), "the grid point (id into the config table)"),) + ANSWER

SCORED = ANSWERED + _columns(
    ("parsed", pa.string(), "the answer read from the output as lmms-eval reads it, JSON (null: it would guess)"),
    ("score", pa.float64(), "the sample's score in [0, 1]"),
    ("lenient_parsed", pa.string(), "the lenient scoring's reading, JSON, or null (pipeline.tasks.scoring)"),
    ("lenient_score", pa.float64(), "the lenient scoring's score, or null when it was not asked for"),
)

WRITTEN = _columns(
    ("task", pa.string(), "the source's name"),
    ("point", pa.int32(), "the grid point"),
    ("rows", pa.int64(), "rows in the file"),
    ("errors", pa.int64(), "of which rows with an error"),
    ("model_errors", pa.int64(), "of which rows the model failed on"),
    ("first_error", pa.string(), "the first error among the rows, or null"),
    ("path", pa.string(), "the file written"),
)

# An answered row of a sample that could not be answered (yet, or because of its error).
NO_ANSWER = {c.name: None for c in ANSWER} | {"visual_tokens_before": 0, "visual_tokens_after": 0,
                                               "new_tokens": 0}


def names(columns: Iterable[Column]) -> list[str]:
    return [c.name for c in columns]


def schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in columns])


def require(batch: pa.Table, columns: Sequence[Column], stage: str) -> list[dict]:
    """A Ray Data batch as rows, after checking that it has ``columns``. Stages take and
    give Arrow batches: Ray Data's blocks are Arrow, so no pandas conversion runs between
    two model calls (they cost the actor ~10 ms a batch)."""
    missing = [c.name for c in columns if c.name not in batch.column_names]
    if missing:
        raise ValueError(f"{stage} stage needs columns {missing}; got {batch.column_names}")
    return batch.to_pylist()


def table(rows: Sequence[dict], columns: Sequence[Column]) -> pa.Table:
    """Rows -> an Arrow table with exactly ``columns`` (missing keys are nulls)."""
    return pa.Table.from_pylist([{c.name: row.get(c.name) for c in columns} for row in rows],
                                schema=schema(columns))
