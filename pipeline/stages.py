"""The pipeline's stages, one class each: read -> decode -> infer -> score -> write.

    read    (CPU tasks)   a range of a source's rows -> Samples (media read here), minus the
                          (row, grid point) pairs the results store already holds
    decode  (CPU tasks)   images, video path -> frames -> the model's processor: model inputs
    infer   (actor pool)  one model per actor, loaded once; each batch runs under every
                          grid point its rows still need: one row per (sample, point)
    score   (CPU tasks)   task.parse + task.score (and the lenient reading when asked for)
    write   (CPU tasks)   rows -> parquet parts in the results store, per (source, point)

Columns are declared in ``pipeline.rows``: each stage checks what it takes and builds
what it gives from there. A row whose sample failed anywhere keeps flowing with
``error`` set, so every input yields exactly one stored row per grid point.

Failures a stage cannot catch are bounded: a sample's read or decode, and a model
call, run under a deadline (:func:`deadline`) that kills a hung worker, and an actor
whose model fails every row of :data:`FAILING_BATCHES` batches in a row exits when it
is given its next block, so Ray replaces it with a fresh process (a sticky CUDA error). ``pipeline.job.run`` retries,
isolates and stops the job from there. Error messages are deterministic for the same
input (:func:`error_text`: no object addresses, no timestamps).
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import logging
import os
import pickle
import re
import time
import traceback
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from pipeline import rows as contract
from pipeline.tasks import Sample, get_task
from pipeline.tasks.scoring import LENIENT, LMMS_EVAL, check_scoring, read

log = logging.getLogger(__name__)

MODEL_ERROR = "model: "  # how a row the model failed on begins its error
FAILING_BATCHES = 3  # an actor whose model fails every row of this many batches in a row is replaced
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?")


def error_text(message: str) -> str:
    """``message`` without what changes run to run for the same input (object addresses
    as in ``<_io.BytesIO object at 0x7f..>``, timestamps), so error rows are deterministic."""
    return _TIMESTAMP.sub("<time>", _ADDRESS.sub("", str(message)))


@contextlib.contextmanager
def deadline(seconds: float):
    """Kill this worker process if the block takes longer than ``seconds`` (0: no deadline).
    A hung decoder or model call sits in C code that no exception interrupts;
    faulthandler's watchdog thread dumps the stack to the worker's log and exits, Ray
    sees a dead worker and retries (``pipeline.job``)."""
    if not seconds:
        yield
        return
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def read_row(index: int, source: str, sample: Sample, points: Sequence[int]) -> dict:
    """The read stage's row for one sample, still to be answered under ``points``."""
    import json

    return {
        "index": index, "task": source, "id": str(sample.id), "prompt": sample.prompt,
        "images": list(sample.images), "video": sample.video,
        "answer": json.dumps(sample.answer), "meta": json.dumps(sample.meta, default=str),
        "error": sample.error,
        "max_new_tokens": None if sample.max_new_tokens is None else int(sample.max_new_tokens),
        "until": list(sample.until), "points": list(points),
    }


class ReadStage:
    """RANGE rows -> READ rows. ``todo`` maps each source's name to an object ref of its
    :class:`Todo` (which points each of its rows still needs), computed once from the
    results store before the job starts."""

    def __init__(self, sources: Mapping[str, object], todo: Mapping[str, object], sample_timeout_s: float = 0.0):
        self.sources, self.todo, self.timeout = dict(sources), dict(todo), sample_timeout_s

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for item in contract.require(batch, contract.RANGE, "read"):
            name, start, stop = item["source"], int(item["start"]), int(item["stop"])
            todo = _todo(self.todo[name])
            if not todo.any(start, stop):
                continue  # every point of these rows is stored: their media are never read
            with deadline(self.timeout * (stop - start)):
                for index, sample in self.sources[name].samples(start, stop):
                    points = todo.points(index)
                    if points:
                        sample.error = error_text(sample.error) if sample.error else None
                        out.append(read_row(index, name, sample, points))
        return contract.table(out, contract.READ)


class Todo:
    """Per grid point, which rows of one source still need an answer: one bit a row."""

    def __init__(self, points: Sequence[int], masks: Sequence[np.ndarray]):
        self.point_ids = list(points)
        self.masks = np.stack(masks) if masks else np.zeros((0, 0), dtype=bool)  # (P, N) True: to do

    @property
    def pending(self) -> int:
        return int(self.masks.sum())

    def any(self, start: int, stop: int) -> bool:
        return bool(self.masks[:, start:stop].any())

    def points(self, index: int) -> list[int]:
        return [p for p, todo in zip(self.point_ids, self.masks[:, index]) if todo]


@functools.lru_cache(maxsize=64)
def _todo(ref) -> Todo:
    import ray

    return ray.get(ref)


class DecodeStage:
    """Media -> model inputs, on the CPU: images decoded, video frames sampled uniformly
    and resized to a pixel budget, then the model's processor (chat template,
    tokenizer, image/video processor) on each sample. The actors get rows ready for the
    model, so none of this ever runs on (or waits for) a model's actor."""

    def __init__(self, model: str, frames: int = 32, max_pixels: Optional[int] = None,
                 sample_timeout_s: float = 0.0):
        self.model, self.frames, self.max_pixels, self.timeout = model, frames, max_pixels, sample_timeout_s

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.infer import Preparer

        rows = contract.require(batch, contract.READ, "decode")
        preparer = Preparer.from_spec(self.model)  # loaded once per worker process
        for row in rows:
            row["inputs"] = None
            if not row.get("error"):
                with deadline(self.timeout):
                    problem = self._prepare(preparer, row)
                row["error"] = error_text(problem) if problem else None
        return contract.table(rows, contract.DECODED)

    def _prepare(self, preparer, row: dict) -> Optional[str]:
        """Sets ``row["inputs"]``; returns why it could not (a row error), or None."""
        from pipeline import video
        from pipeline.infer import Request, decode_image

        request = Request(prompt=row["prompt"], max_new_tokens=row["max_new_tokens"], until=tuple(row["until"] or ()))
        if row.get("video"):
            try:
                clip = video.read_clip(row["video"], self.frames, max_pixels=self.max_pixels)
            except Exception as exc:  # a corrupt or missing video is a row error
                return f"video: {exc}"
            request.frames, request.fps, request.frame_indices = clip.frames, float(clip.fps), list(clip.indices)
        try:
            request.images = [decode_image(b) for b in (row["images"] or [])]
            problem = preparer.check(request)
            if not problem:
                row["inputs"] = pickle.dumps(preparer.prepare(request), protocol=5)
            return problem
        except Exception as exc:
            return f"input: {exc}"


def _task_id() -> Optional[str]:
    """The Ray task this call belongs to (one per block an actor is given)."""
    import ray

    return ray.get_runtime_context().get_task_id() if ray.is_initialized() else None


class InferStage:
    """One model per actor; answers each row under every grid point it lists, batch by
    batch: all rows of the batch that need point 0, then point 1, ... ``points`` is the
    config table (``PruningConfig.to_dict()`` per point id) the rows' ids index. The
    batch's points share the vision encoder and the decoder layers below their first
    pruning layers (``Generator.shared``, pipeline/prefix.py): answers are each point's
    alone, timings each point's as if alone (the shared seconds in ``shared_s``)."""

    def __init__(self, model: str, points: Sequence[dict], device: str = "cpu", dtype: Optional[str] = None,
                 threads: Optional[int] = None, device_map: Optional[str] = None, batch_timeout_s: float = 0.0):
        import torch

        from pipeline.infer import Generator
        from pruning import PruningConfig

        if threads:  # Ray pins OMP threads to the actor's num_cpus; CPU runs may want more
            torch.set_num_threads(threads)
        self.configs = [PruningConfig.from_dict(p) for p in points]
        self.generator = Generator(model, device=device, dtype=dtype, device_map=device_map)
        self.timeout, self.failing, self.failing_task = batch_timeout_s, 0, None
        try:
            self.generator.warm_up()  # the first batch's timings would carry one-off costs
        except Exception as exc:  # a model that cannot answer: its batches say so, row by row
            log.warning("warm-up failed: %s", error_text(f"{type(exc).__name__}: {exc}"))

    def __call__(self, batch: pa.Table) -> pa.Table:
        task = _task_id()
        if self.failing >= FAILING_BATCHES and task != self.failing_task:
            # At the start of a new task, so the rows of the last one are kept: they show
            # the failures (pipeline.job's breaker counts them); this task's block is set
            # aside and answered again (pipeline.job.run).
            log.error("the model failed every row of %d batches in a row: exiting so that Ray replaces this "
                      "actor with a fresh process", self.failing)
            os._exit(70)
        started = time.time()
        rows = []
        for row in contract.require(batch, contract.DECODED, "infer"):
            prepared = pickle.loads(row["inputs"]) if row["inputs"] is not None else None
            for point in row["points"]:
                rows.append({**row, "point": point, "prepared": prepared, **contract.NO_ANSWER})
        asked = [row for row in rows if not row["error"]]
        points = sorted({row["point"] for row in rows})
        # The batch's points share the vision encoder and their common lower layers.
        with deadline(self.timeout), self.generator.shared([self.configs[p] for p in points]):
            for point in points:
                group = [row for row in asked if row["point"] == point]
                if group:
                    self._answer(group, self.configs[point])
        if asked:
            failed = all(row["error"] and row["error"].startswith(MODEL_ERROR) for row in asked)
            self.failing, self.failing_task = (self.failing + 1, task) if failed else (0, None)
        finished = time.time()
        for row in rows:
            # Wall-clock span of this actor call (epoch seconds): first start to last end
            # over all rows is the model stage's busy time, without actor start-up.
            row.update(infer_started=started, infer_finished=finished)
        return contract.table(rows, contract.ANSWERED)

    def _answer(self, rows: list[dict], config) -> None:
        import json

        try:
            answers = self.generator.run_prepared([row["prepared"] for row in rows], config)
        except Exception:
            problem = error_text(traceback.format_exc(limit=2).strip().splitlines()[-1])
            if len(rows) == 1:
                rows[0]["error"] = MODEL_ERROR + problem
                return
            log.warning("batch of %d failed (%s); retrying its samples one by one", len(rows), problem)
            for row in rows:
                self._answer([row], config)
            return
        for row, answer in zip(rows, answers):
            row.update(output=answer.text, visual_tokens_before=answer.visual_tokens_before,
                       visual_tokens_after=answer.visual_tokens_after, kept=json.dumps(answer.kept),
                       new_tokens=answer.new_tokens, ttft_s=answer.ttft_s, prefill_s=answer.prefill_s,
                       decode_s_per_token=answer.decode_s_per_token, select_s=answer.select_s,
                       peak_memory_mb=answer.peak_memory_mb, spans=json.dumps(answer.spans),
                       prompt_tokens=answer.prompt_tokens, generate_s=answer.generate_s,
                       batch_size=answer.batch_size, shared_s=answer.shared_s)


class ScoreStage:
    """Parse each output and score it with its task's own metric (CPU): lmms-eval's
    reading (``parsed``, ``score``), and with ``scoring="lenient"`` also the lenient one
    (``lenient_parsed``, ``lenient_score``; null otherwise). Rows of sources that are not
    benchmarks (annotation inputs) pass unscored."""

    def __init__(self, scored: Sequence[str], scoring: str = LMMS_EVAL):
        self.scored, self.lenient = set(scored), check_scoring(scoring) == LENIENT

    def __call__(self, batch: pa.Table) -> pa.Table:
        import json

        rows = contract.require(batch, contract.ANSWERED, "score")
        for row in rows:
            row.update(parsed=None, score=0.0, lenient_parsed=None, lenient_score=0.0 if self.lenient else None)
            if row["error"] or row["output"] is None or row["task"] not in self.scored:
                continue
            task = get_task(row["task"])
            sample = Sample(id=row["id"], prompt=row["prompt"], answer=json.loads(row["answer"]),
                            meta=json.loads(row["meta"]))
            try:
                parsed, score = read(task, row["output"], sample)
                row.update(parsed=json.dumps(parsed), score=score)
                if self.lenient:
                    parsed, score = read(task, row["output"], sample, lenient=True)
                    row.update(lenient_parsed=json.dumps(parsed), lenient_score=score)
            except Exception as exc:  # an unparseable answer scores 0 and says why
                row["error"] = error_text(f"score: {exc}")
        return contract.table(rows, contract.SCORED)


class WriteStage:
    """SCORED rows -> one parquet part per (source, point) in the results store; gives a
    WRITTEN row per part. ``keys[source][point]`` names where each point's rows go."""

    def __init__(self, store: str, keys: Mapping[str, Sequence[Optional[str]]]):
        from pipeline.store import RowStore

        self.store, self.keys = RowStore(store), {k: list(v) for k, v in keys.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        contract.require(batch.slice(0, 0), contract.SCORED, "write")
        written = []
        groups = batch.group_by(["task", "point"]).aggregate([]).to_pylist() if batch.num_rows else []
        for group in groups:
            source, point = group["task"], group["point"]
            mask = pc.and_(pc.equal(batch["task"], source), pc.equal(batch["point"], point))
            part = batch.filter(mask).select(contract.names(contract.SCORED))
            path = self.store.write(part, source, self.keys[source][point])
            errors = [e for e in part["error"].to_pylist() if e is not None]
            written.append({"task": source, "point": point, "rows": part.num_rows, "errors": len(errors),
                            "model_errors": sum(e.startswith(MODEL_ERROR) for e in errors),
                            "first_error": errors[0] if errors else None, "path": path})
        return contract.table(written, contract.WRITTEN)
