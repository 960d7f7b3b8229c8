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

Flow: read (image files, Ray tasks) -> decode (video frames, then the model's processor:
``pipeline.stages.DecodeStage``) -> infer (actor pool, one model each, ``pipeline.stages.InferStage``). Every input gives
exactly one row: id, kind, source, output, visual tokens before/after, new tokens,
timings, error (a corrupt or unreadable file is a row with its error, not a crash).

Output, under --out: ``parts/part-*.parquet`` (one file per --chunk-size rows, written
as results arrive), ``annotations.parquet`` (all parts merged, one row per id, in
input order), ``job.json`` (the settings) and ``summary.json`` (counts and timings).
Resume: a second run over the same --out skips the ids already in its parts and
annotates only the rest (new files, or the rows of a part lost to an interruption);
``--retry-errors`` also redoes the ids whose row has an error. A run with different
settings (model, prompt, pruning config, frames) refuses the directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script (python jobs/annotate.py): import the repo's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.stages import DecodeStage, InferStage, batch_rows, batched_dataset, rows_batch, sample_to_row  # noqa: E402
from pipeline.tasks import Sample  # noqa: E402
from pruning import PruningConfig  # noqa: E402

log = logging.getLogger("jobs.annotate")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
SCHEMA = pa.schema([
    ("id", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("output", pa.string()),
    ("method", pa.string()), ("pruning_rate", pa.float64()),
    ("visual_tokens_before", pa.int64()), ("visual_tokens_after", pa.int64()), ("new_tokens", pa.int64()),
    ("ttft_s", pa.float64()), ("prefill_s", pa.float64()), ("decode_s_per_token", pa.float64()),
    ("select_s", pa.float64()), ("peak_memory_mb", pa.float64()), ("error", pa.string()),
])


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

    def settings(self) -> dict:
        """What must match for a rerun to resume (not where the data or output live)."""
        return {"model": self.model, "prompt": self.prompt, "config": self.config.to_dict(),
                "column": self.column, "frames": self.frames, "max_pixels": self.max_pixels,
                "max_new_tokens": self.max_new_tokens}


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


def list_parquet(path: Path, column: Optional[str], id_column: Optional[str] = None) -> list[Item]:
    """One item per row of ``column`` (image bytes, HF image dicts or file paths)."""
    column = parquet_column(path, column, id_column)
    table = pq.read_table(path, columns=[c for c in (column, id_column) if c])
    values = table.column(column).to_pylist()
    ids = [str(v) for v in table.column(id_column).to_pylist()] if id_column else \
        [str(i) for i in range(len(values))]
    if len(set(ids)) != len(ids):
        raise ValueError(f"--id-column {id_column!r} has duplicate ids")
    return [_cell_item(i, value, f"{path.name}[{row}]", path.parent) for row, (i, value) in
            enumerate(zip(ids, values))]


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


def list_inputs(data: str, column: Optional[str] = None, id_column: Optional[str] = None) -> list[Item]:
    check_data(data, column, id_column)
    path = Path(data)
    return list_folder(path) if path.is_dir() else list_parquet(path, column, id_column)


def to_row(index: int, item: Item, job: Job) -> dict:
    """The item as a read-stage row (``pipeline.stages.sample_to_row``), plus where the
    image file is (read by :class:`ReadImageStage`) and what the output row names."""
    sample = Sample(id=item.id, prompt=job.prompt, images=[item.data] if item.data is not None else [],
                    video=item.path if item.kind == "video" else None, error=item.error,
                    max_new_tokens=job.max_new_tokens)
    row = sample_to_row(index, "annotate", sample, [job.config.to_dict()])
    row.update(kind=item.kind, source=item.source,
               image_path=item.path if item.kind == "image" and item.data is None else None)
    return row


class ReadImageStage:
    """Image path -> encoded bytes in ``images``; a file that cannot be read or is no image
    (checked from its header and structure, not decoded in full) is a row error naming it."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        from PIL import Image, UnidentifiedImageError

        rows = batch_rows(batch, ("image_path", "error"), "read image")
        for row in rows:
            path = row.get("image_path")
            if not path or row.get("error"):
                continue
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                row["error"] = f"image: cannot read {path}: {exc.strerror or exc}"
                continue
            try:
                with Image.open(BytesIO(data)) as image:
                    image.verify()
                row["images"] = [data]
            except Exception as exc:  # PIL raises several types for broken files
                detail = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
                row["error"] = f"image: cannot decode {path}: {detail}"
        return rows_batch(rows)


# ---------------------------------------------------------------- outputs


def read_parts(out: Path) -> pd.DataFrame:
    """Every row of ``out/parts``, oldest part first (empty when there are none)."""
    parts = sorted((out / "parts").glob("part-*.parquet"))
    if not parts:
        return SCHEMA.empty_table().to_pandas()
    return pd.concat([pq.read_table(p, schema=SCHEMA).to_pandas() for p in parts], ignore_index=True)


def done_ids(out: Path, retry_errors: bool = False) -> set[str]:
    rows = read_parts(out)
    if retry_errors:
        rows = rows[rows["error"].isna()]
    return set(rows["id"])


def write_part(rows: list[dict], out: Path, run: str, number: int) -> Path:
    """One part file, written under a temporary name and renamed (never half-written)."""
    path = out / "parts" / f"part-{run}-{number:05d}.parquet"
    scratch = path.with_name("." + path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=SCHEMA),
                   scratch)
    os.replace(scratch, path)
    return path


def merge(out: Path, order: list[str]) -> Path:
    """``out/annotations.parquet``: one row per id (a later part wins), in ``order``, then
    any ids no longer among the inputs."""
    rows = read_parts(out).drop_duplicates("id", keep="last")
    position = {item_id: i for i, item_id in enumerate(order)}
    rows = rows.assign(_order=rows["id"].map(lambda i: position.get(i, len(order))))
    rows = rows.sort_values(["_order", "id"], kind="stable").drop(columns="_order")
    path = out / "annotations.parquet"
    pq.write_table(pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False), path)
    return path


def _output_row(row: dict, config: PruningConfig) -> dict:
    """The written columns of an infer-stage row (a NaN for a missing value -> None)."""
    out = {k: None if _missing(row.get(k)) else row.get(k) for k in SCHEMA.names}
    out.update(method=config.method, pruning_rate=config.pruning_rate)
    if out["error"]:
        out["output"] = None
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


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


def dataset(rows: list[dict], job: Job):
    """read images -> decode videos and prepare model inputs -> infer (actor pool), over ``rows`` (a local Ray
    cluster unless RAY_ADDRESS names one)."""
    import ray

    from pipeline.evaluate import BATCHES_PER_BLOCK, init_ray, warm_cpu_workers

    init_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar: the job's own
    warm_cpu_workers(job.model, ray.cluster_resources().get("CPU", 1.0) - job.actors)  # actors: 1 CPU each
    ds = batched_dataset(rows, job.batch_size, BATCHES_PER_BLOCK)
    ds = ds.map_batches(ReadImageStage(), batch_size=job.batch_size, batch_format="pyarrow")
    ds = ds.map_batches(DecodeStage(job.model, job.frames, job.max_pixels), batch_size=job.batch_size, batch_format="pyarrow")
    device = "cuda" if job.num_gpus > 0 else "cpu"
    return ds.map_batches(InferStage, fn_constructor_kwargs={"model": job.model, "device": device, "dtype": job.dtype},
                          batch_size=job.batch_size, batch_format="pyarrow",
                          compute=ray.data.ActorPoolStrategy(size=job.actors), num_gpus=job.num_gpus)


def annotate(job: Job) -> dict:
    """Annotate the inputs of ``job`` not yet in its output directory; returns the summary."""
    from tqdm import tqdm

    out = Path(job.out)
    check_settings(out, job)
    items = list_inputs(job.data, job.column, job.id_column)
    done = done_ids(out, job.retry_errors)
    pending = [item for item in items if item.id not in done]
    kinds = {k: sum(1 for i in items if i.kind == k) for k in ("image", "video")}
    log.info("%d inputs (%d images, %d videos) in %s; %d already annotated in %s; annotating %d",
             len(items), kinds["image"], kinds["video"], job.data, len(items) - len(pending), out, len(pending))
    start = time.perf_counter()
    run = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**6:06d}"
    parts, buffer, errors = [], [], 0
    if pending:
        ds = dataset([to_row(i, item, job) for i, item in enumerate(pending)], job)
        (out / "parts").mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(pending), desc="annotate", unit="input", file=sys.stderr) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    buffer.append(_output_row(row, job.config))
                    errors += buffer[-1]["error"] is not None
                bar.update(len(batch))
                bar.set_postfix(errors=errors)
                while len(buffer) >= job.chunk_size:
                    parts.append(write_part(buffer[:job.chunk_size], out, run, len(parts)))
                    buffer = buffer[job.chunk_size:]
        if buffer:
            parts.append(write_part(buffer, out, run, len(parts)))
    seconds = time.perf_counter() - start
    merged = merge(out, [item.id for item in items])
    errors_column = pq.read_table(merged, columns=["error"]).column("error")
    summary = {"inputs": len(items), "already_done": len(items) - len(pending), "processed": len(pending),
               "errors": errors, "annotated": len(errors_column),
               "errors_in_annotations": len(errors_column) - errors_column.null_count,
               "parts_written": len(parts), "seconds": seconds,
               "inputs_per_second": len(pending) / seconds if pending and seconds else 0.0,
               "annotations": str(merged), "config": job.config.flat(), "model": job.model}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("annotated %d inputs (%d errors) in %.1fs; %s holds %d rows", len(pending), errors, seconds,
             merged, summary["annotated"])
    return summary


def build_job(args: argparse.Namespace) -> Job:
    from pipeline.evaluate import build_config  # the same pruning options as the pipeline's

    return Job(data=args.data, prompt=args.prompt, model=args.model, out=args.out,
               config=build_config(args), column=args.column, id_column=args.id_column,
               frames=args.frames, max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens,
               batch_size=args.batch_size, actors=args.actors, num_gpus=args.num_gpus, dtype=args.dtype,
               chunk_size=args.chunk_size, retry_errors=args.retry_errors)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python jobs/annotate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of images/videos, or a parquet file")
    parser.add_argument("--prompt", required=True, help="the instruction asked of every input")
    parser.add_argument("--model", required=True, help="local path, hub id or tiny:<family> (e.g. tiny:qwen2_vl)")
    parser.add_argument("--out", required=True, help="output directory (parts/, annotations.parquet, summary.json)")
    parser.add_argument("--method", default="none", help="pruning method (vlm_pruner, fastv, ...) or 'none' "
                                                         "(default)")
    parser.add_argument("--pruning-rate", type=float, help="share of visual tokens removed, in [0, 1)")
    parser.add_argument("--num-retain", type=int, help="visual tokens kept per span (instead of a rate)")
    parser.add_argument("--layer", type=int, help="decoder layer to prune before (method default if unset)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="a method parameter, e.g. --param token_batch=8 (repeatable)")
    parser.add_argument("--column", help="parquet: the column with the images/paths (default: image, video, "
                                         "path or file)")
    parser.add_argument("--id-column", help="parquet: take ids from this column (default: the row index)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per video (default 8)")
    parser.add_argument("--max-pixels", type=int, help="resize video frames to at most this many pixels")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length at most (default 64)")
    parser.add_argument("--batch-size", type=int, default=4, help="inputs per model batch (default 4)")
    parser.add_argument("--actors", type=int, default=1, help="model replicas in the actor pool (default 1)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (default 0: CPU)")
    parser.add_argument("--dtype", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="rows per part file, the most an interruption loses (default 64)")
    parser.add_argument("--retry-errors", action="store_true", help="also redo inputs whose row has an error")
    args = parser.parse_args(argv)
    for name in ("frames", "max_new_tokens", "batch_size", "actors", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        job = build_job(args)
        from pipeline.models import model_config

        job.config.check_against(model_config(job.model))
        check_data(job.data, job.column, job.id_column)  # before Ray starts
    except (ValueError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = annotate(job)
    print(json.dumps({k: summary[k] for k in ("inputs", "already_done", "processed", "errors", "annotated",
                                              "seconds", "annotations")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
