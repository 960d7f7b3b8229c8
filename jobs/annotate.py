"""Label every image or video of a folder or a parquet column with a pruned VLM (Ray Data).

    python jobs/annotate.py --data photos/ --prompt "Describe the picture in one sentence." \\
        --model tiny:qwen2_vl --method vlm_pruner --pruning-rate 0.889 --out out/captions

    python jobs/annotate.py --data shots.parquet --column image --prompt "What is shown?" \\
        --model Qwen/Qwen2-VL-2B-Instruct --num-gpus 1 --actors 2 --out out/shots

Inputs: a folder is searched recursively for images (.jpg .jpeg .png .bmp .gif .webp
.tif .tiff) and videos (.mp4 .mkv .mov .avi .webm .m4v), hidden files left out; the id
is the path relative to the folder. In a parquet file, the column (``--column``) holds
image bytes, Hugging Face image dicts ({"bytes", "path"}) or file paths (relative to
the parquet's folder; videos by extension); the id is the row index, or ``--id-column``.

Flow: the inputs are listed by a Ray task into ``inputs.parquet`` (the first run's
inputs in their order, then each later run's new ones: a row's position never
changes), then the same pipeline as every benchmark runs (``pipeline.job``): read
(image files, on the workers) -> decode (video frames, the model's processor) -> infer
(actor pool, one model each) -> write. Every input gives exactly one row: id, kind,
source, output, visual tokens before/after, new tokens, timings, error (a corrupt or
unreadable file is a row with its error, not a crash).

Output, under --out: ``rows/`` (parquet parts of at most --chunk-size rows, written by
the workers as results arrive), ``annotations.parquet`` (one row per input, in the
order of ``inputs.parquet``), ``job.json`` (the settings) and ``summary.json`` (counts
and timings). Resume: a second run over the same --out answers only the inputs not yet
in ``rows/`` (new files, or the rows of parts lost to an interruption);
``--retry-errors`` also redoes the inputs whose row has an error. A run with different
settings (model, prompt, pruning config, frames) refuses the directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

if __package__ in (None, ""):  # run as a script (python jobs/annotate.py): import the repo's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline import cli  # noqa: E402
from pipeline import job as pipeline_job  # noqa: E402
from pipeline.sources import InputsSource  # noqa: E402
from pruning import PruningConfig  # noqa: E402

log = logging.getLogger("jobs.annotate")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
# inputs.parquet: one row per input ever listed for this output directory.
INPUTS = pa.schema([("id", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("path", pa.string()),
                    ("data", pa.binary()), ("error", pa.string())])
SCHEMA = pa.schema([
    ("id", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("output", pa.string()),
    ("method", pa.string()), ("pruning_rate", pa.float64()),
    ("visual_tokens_before", pa.int64()), ("visual_tokens_after", pa.int64()), ("new_tokens", pa.int64()),
    ("ttft_s", pa.float64()), ("prefill_s", pa.float64()), ("decode_s_per_token", pa.float64()),
    ("select_s", pa.float64()), ("peak_memory_mb", pa.float64()), ("error", pa.string()),
])
INPUT_ROWS = 256  # rows per row group of inputs.parquet (the read stage reads a few at a time)


@dataclass(frozen=True)
class Item:
    """One input: an image (a file, or bytes from parquet) or a video file."""

    id: str
    kind: str  # "image" or "video"
    source: str  # the file, or "<parquet>[row]"
    path: Optional[str] = None
    data: Optional[bytes] = None
    error: Optional[str] = None  # a cell that names no input


@dataclass(frozen=True)
class Job:
    """What to annotate, how, and where the results go."""

    data: str  # a folder, or a parquet file
    prompt: str  # the instruction asked of every input
    model: str  # local path, hub id or tiny:<family>
    out: str  # output directory
    config: PruningConfig = PruningConfig.none()
    column: Optional[str] = None  # parquet: the column holding the inputs
    id_column: Optional[str] = None  # parquet: ids from this column instead of the row index
    frames: int = 8  # frames sampled per video
    max_pixels: Optional[int] = None  # video frames resized to at most this many pixels
    max_new_tokens: int = 64  # answer length at most
    batch_size: int = 4  # inputs per model batch
    actors: int = 1  # model replicas
    num_gpus: float = 0.0  # GPUs per actor
    dtype: Optional[str] = None  # model dtype (default: the checkpoint's)
    chunk_size: int = 64  # rows per part file: what an interruption can lose at most
    retry_errors: bool = False  # redo the ids whose row has an error
    sample_timeout_s: float = 600.0  # reading or decoding one input longer than this: its row's error

    def settings(self) -> dict:
        """What must match for a rerun to resume (not where the data or output live)."""
        return {"model": self.model, "prompt": self.prompt, "config": self.config.to_dict(),
                "column": self.column, "frames": self.frames, "max_pixels": self.max_pixels,
                "max_new_tokens": self.max_new_tokens}

    def plan(self) -> pipeline_job.Plan:
        out = Path(self.out).resolve()
        source = InputsSource(str(out / "inputs.parquet"), self.prompt, self.max_new_tokens)
        resources = pipeline_job.Resources(actors=self.actors, num_gpus=self.num_gpus, batch_size=self.batch_size,
                                           frames=self.frames, max_pixels=self.max_pixels, dtype=self.dtype,
                                           sample_timeout_s=self.sample_timeout_s)
        return pipeline_job.Plan(self.model, (source,), (self.config,), str(out / "rows"), resources,
                                 keep_errors=not self.retry_errors, write_rows=self.chunk_size)


# ---------------------------------------------------------------- inputs


def kind_of(name: str) -> Optional[str]:
    suffix = Path(name).suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def list_folder(root: Path) -> list[Item]:
    """Every image and video under ``root``, sorted by relative path."""
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            kind = kind_of(name)
            if kind and not name.startswith("."):
                path = Path(dirpath) / name
                items.append(Item(path.relative_to(root).as_posix(), kind, str(path), path=str(path)))
    return sorted(items, key=lambda item: item.id)


def parquet_column(path: Path, column: Optional[str], id_column: Optional[str] = None) -> str:
    """The column holding the inputs (``column``, or the first of image, video, path, file);
    checks that the columns exist from the schema alone."""
    names = pq.read_schema(path).names
    if column is None:
        column = next((c for c in ("image", "video", "path", "file") if c in names), None)
        if column is None:
            raise ValueError(f"--column is required for {path}: it has columns {names}")
    for name in (column, id_column):
        if name is not None and name not in names:
            raise ValueError(f"{path} has no column {name!r}; its columns: {names}")
    return column


def iter_parquet(path: Path, column: Optional[str], id_column: Optional[str] = None) -> Iterator[Item]:
    """One item per row of ``column`` (image bytes, HF image dicts or file paths), read a
    few hundred rows at a time."""
    column = parquet_column(path, column, id_column)
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=INPUT_ROWS,
                                                   columns=[c for c in (column, id_column) if c]):
        values = batch.column(column).to_pylist()
        ids = [str(v) for v in batch.column(id_column).to_pylist()] if id_column else \
            [str(i) for i in range(row, row + len(values))]
        for item_id, value in zip(ids, values):
            yield _cell_item(item_id, value, f"{path.name}[{row}]", path.parent)
            row += 1


def _cell_item(item_id: str, value, source: str, base: Path) -> Item:
    if isinstance(value, dict):  # a Hugging Face Image feature
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return Item(item_id, "image", source, data=bytes(value))
    if isinstance(value, str) and value:
        path = Path(value) if Path(value).is_absolute() else base / value
        return Item(item_id, kind_of(value) or "image", str(path), path=str(path))
    return Item(item_id, "image", source, error=f"input: the cell holds no image or path ({type(value).__name__})")


def check_data(data: str, column: Optional[str] = None, id_column: Optional[str] = None) -> None:
    """Refuse a --data that is neither a folder nor a parquet file with the columns asked for."""
    path = Path(data)
    if path.is_file() and path.suffix == ".parquet":
        parquet_column(path, column, id_column)
    elif not path.is_dir():
        raise ValueError(f"--data must be a folder or a .parquet file, got {data!r}")


def iter_inputs(data: str, column: Optional[str] = None, id_column: Optional[str] = None) -> Iterator[Item]:
    check_data(data, column, id_column)
    path = Path(data)
    return iter(list_folder(path)) if path.is_dir() else iter_parquet(path, column, id_column)


def register_inputs(job: Job) -> dict:
    """Bring ``<out>/inputs.parquet`` up to date with the inputs: rows already there keep
    their position, new inputs are appended (written under a temporary name, then moved
    into place). Runs as a Ray task, so that the driver never lists the data.
    Returns ``{"inputs", "images", "videos", "new"}``."""
    path = Path(job.out).resolve() / "inputs.parquet"
    scratch = path.with_name(".inputs.parquet.tmp")
    seen: set[str] = set()
    counts = {"inputs": 0, "images": 0, "videos": 0, "new": 0}
    with pq.ParquetWriter(scratch, INPUTS) as writer:
        if path.exists():
            for batch in pq.ParquetFile(path).iter_batches(batch_size=INPUT_ROWS):
                writer.write_batch(batch)
                for item_id, kind in zip(batch.column("id").to_pylist(), batch.column("kind").to_pylist()):
                    seen.add(item_id)
                    counts["inputs"] += 1
                    counts[kind + "s"] += 1
        fresh, listed = [], set()
        for item in iter_inputs(job.data, job.column, job.id_column):
            if item.id in listed:
                raise ValueError(f"--id-column {job.id_column!r} has duplicate ids ({item.id!r})")
            listed.add(item.id)
            if item.id in seen:
                continue
            seen.add(item.id)
            fresh.append(item)
            counts["inputs"] += 1
            counts["new"] += 1
            counts[item.kind + "s"] += 1
            if len(fresh) == INPUT_ROWS:
                writer.write_table(_items_table(fresh))
                fresh = []
        if fresh:
            writer.write_table(_items_table(fresh))
    os.replace(scratch, path)
    return counts


def _items_table(items: list[Item]) -> pa.Table:
    return pa.Table.from_pylist([{"id": i.id, "kind": i.kind, "source": i.source, "path": i.path, "data": i.data,
                                  "error": i.error} for i in items], schema=INPUTS)


# ---------------------------------------------------------------- outputs


def merge(job: Job) -> dict:
    """``<out>/annotations.parquet`` from the stored rows: one row per input, in the order
    of ``inputs.parquet``; returns the counts for the summary. Runs as a Ray task."""
    plan = job.plan()
    (source,) = plan.sources
    count = source.count()
    stored = pipeline_job.stored(plan, source, 0, count).to_pylist()
    by_index = {row["index"]: row for row in stored}
    inputs = pq.read_table(source.table, columns=["id", "kind", "source"]).to_pylist()
    path = Path(job.out).resolve() / "annotations.parquet"
    rows = []
    for index, item in enumerate(inputs):
        row = by_index.get(index) or {"error": "not answered (the run was cut short)"}
        rows.append(_output_row({**row, **item}, job.config))
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    errors = sum(1 for r in rows if r["error"] is not None)
    return {"annotated": len(rows), "errors_in_annotations": errors, "annotations": str(path)}


def _output_row(row: dict, config: PruningConfig) -> dict:
    """The written columns of a stored row."""
    out = {k: row.get(k) for k in SCHEMA.names}
    out.update(method=config.method, pruning_rate=config.pruning_rate)
    if out["error"]:
        out["output"] = None
    return out


def check_settings(out: Path, job: Job) -> None:
    """Refuse an output directory annotated with other settings; record them on first use."""
    path = out / "job.json"
    settings = job.settings()
    if path.exists():
        before = json.loads(path.read_text())
        changed = [k for k in settings if before.get(k) != settings[k]]
        if changed:
            raise ValueError(f"{out} holds annotations made with other settings ({', '.join(changed)} differ: "
                             f"{ {k: before.get(k) for k in changed} }); use another --out or the same settings")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


# ---------------------------------------------------------------- the job


def annotate(job: Job) -> dict:
    """Annotate the inputs of ``job`` not yet in its output directory; returns the summary."""
    import ray

    out = Path(job.out)
    check_settings(out, job)
    pipeline_job.init_ray()
    on_worker = ray.remote(num_cpus=0.5)
    listed = ray.get(on_worker(register_inputs).remote(job))
    log.info("%d inputs (%d images, %d videos) in %s, %d new", listed["inputs"], listed["images"],
             listed["videos"], job.data, listed["new"])
    parts = []
    progress = pipeline_job.run(job.plan(), desc="annotate", on_written=lambda w: parts.append(w["path"]))
    processed = progress.total_pending
    merged = ray.get(on_worker(merge).remote(job))
    summary = {"inputs": listed["inputs"], "already_done": listed["inputs"] - processed, "processed": processed,
               "errors": progress.errors, **merged, "parts_written": len(parts), "seconds": progress.seconds,
               "inputs_per_second": processed / progress.seconds if processed and progress.seconds else 0.0,
               "config": job.config.flat(), "model": job.model}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("annotated %d inputs (%d errors) in %.1fs; %s holds %d rows", processed, progress.errors,
             progress.seconds, merged["annotations"], summary["annotated"])
    return summary


def build_job(args: argparse.Namespace) -> Job:
    return Job(data=args.data, prompt=args.prompt, model=args.model, out=args.out,
               config=cli.pruning_config(args), column=args.column, id_column=args.id_column,
               frames=args.frames, max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens,
               batch_size=args.batch_size, actors=args.actors, num_gpus=args.num_gpus, dtype=args.dtype,
               chunk_size=args.chunk_size, retry_errors=args.retry_errors, sample_timeout_s=args.sample_timeout)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python jobs/annotate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of images/videos, or a parquet file")
    parser.add_argument("--prompt", required=True, help="the instruction asked of every input")
    parser.add_argument("--model", required=True, help="local path, hub id or tiny:<family> (e.g. tiny:qwen2_vl)")
    parser.add_argument("--out", required=True, help="output directory (parts/, annotations.parquet, summary.json)")
    cli.add_pruning_options(parser)
    parser.add_argument("--column", help="parquet: the column with the images/paths (default: image, video, "
                                         "path or file)")
    parser.add_argument("--id-column", help="parquet: take ids from this column (default: the row index)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length at most (default 64)")
    cli.add_resource_options(parser, batch_size=4, frames=8)
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="rows per part file, the most an interruption loses (default 64)")
    parser.add_argument("--retry-errors", action="store_true", help="also redo inputs whose row has an error")
    args = parser.parse_args(argv)
    try:  # every option before Ray starts
        cli.check(args)
        job = build_job(args)
        from pipeline.models import model_config

        job.config.check_against(model_config(job.model))
        check_data(job.data, job.column, job.id_column)  # before Ray starts
    except (ValueError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        summary = annotate(job)
    except pipeline_job.PipelineError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    print(json.dumps({k: summary[k] for k in ("inputs", "already_done", "processed", "errors", "annotated",
                                              "seconds", "annotations")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
