"""The pipeline's stages, one class each: read -> decode -> infer -> score.

Rows are plain dicts (Ray Data blocks), so any stage can run anywhere in the cluster:

    read    (driver)      task rows -> Sample -> row: index, id, task, prompt, images
                          (encoded bytes), video (path), answer/meta (JSON), error, configs
    decode  (CPU tasks)   images, video path -> frames -> the model's processor: model inputs
    infer   (actor pool)  one model per actor, loaded once; each batch runs under every
                          pruning config of its rows: one output row per (sample, config)
    score   (CPU tasks)   task.parse + task.score

A row whose sample failed anywhere keeps flowing with ``error`` set, so every input
yields exactly one output row per config. Every stage declares the columns it needs.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import traceback
from typing import Optional, Sequence

import pyarrow as pa

from pipeline.tasks import Sample, get_task

log = logging.getLogger(__name__)

# Columns a row carries from the read stage on.
READ_COLUMNS = ("index", "id", "task", "prompt", "images", "video", "answer", "meta", "error",
                "max_new_tokens", "configs")
# Columns the infer stage needs: the decode stage's model inputs (pickled
# ``pipeline.infer.Prepared``) in place of the media.
INFER_COLUMNS = ("index", "id", "task", "prompt", "inputs", "error", "configs")


def sample_to_row(index: int, task: str, sample: Sample, configs: Sequence[dict]) -> dict:
    """The read stage's output row for one sample, to be answered under every pruning
    config of ``configs``: the sample is decoded and prepared once, and the infer stage
    gives one row per config."""
    return {
        "index": index, "id": str(sample.id), "task": task, "prompt": sample.prompt,
        "images": list(sample.images), "video": sample.video,
        "answer": json.dumps(sample.answer), "meta": json.dumps(sample.meta, default=str),
        "error": sample.error, "max_new_tokens": int(sample.max_new_tokens),
        "configs": json.dumps([json.dumps(c, sort_keys=True) for c in configs]),
    }


def batched_dataset(rows: Sequence[dict], batch_size: int, batches_per_block: int = 1):
    """``rows`` as a Ray Dataset whose blocks hold exactly ``batches_per_block *
    batch_size`` rows (the last one the rest). The CPU stages work a block at a time and
    give one block back, so each model task gets whole batches: with blocks of another
    size Ray Data bundles them into full batches plus a remainder (12 rows -> a batch of 8
    and one of 4, a third more model calls, each nearly as slow as a full one). Several
    batches per block spread the per-task cost of Ray Data (~15-20 ms between tasks,
    ~2 ms between calls of one task on this machine) over several model calls."""
    import ray

    size = batch_size * batches_per_block
    return ray.data.from_arrow([rows_batch(list(rows[lo:lo + size])) for lo in range(0, len(rows), size)])


def batch_rows(batch: pa.Table, columns, stage: str) -> list[dict]:
    """A Ray Data batch as rows, after checking that it has ``columns``. The stages ask
    Ray Data for Arrow batches and answer with :func:`rows_batch`: Ray Data's blocks are
    Arrow, so no pandas conversion runs between two model calls (they cost the actor
    ~10 ms a batch with pandas)."""
    missing = [c for c in columns if c not in batch.column_names]
    if missing:
        raise ValueError(f"{stage} stage needs columns {missing}; got {batch.column_names}")
    return batch.to_pylist()


def rows_batch(rows: list[dict]) -> pa.Table:
    """Rows (all with the same keys) -> the Arrow batch a stage returns."""
    return pa.Table.from_pylist(rows)


class DecodeStage:
    """Media -> model inputs, on the CPU: images decoded, video frames sampled uniformly
    and resized to a pixel budget, then the model's processor (chat template,
    tokenizer, image/video processor) on each sample. The actors get rows ready for the
    model, so none of this ever runs on (or waits for) a model's actor."""

    def __init__(self, model: str, frames: int = 32, max_pixels: Optional[int] = None):
        self.model, self.frames, self.max_pixels = model, frames, max_pixels

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.infer import Preparer

        rows = batch_rows(batch, READ_COLUMNS, "decode")
        preparer = Preparer.from_spec(self.model)  # loaded once per worker process
        for row in rows:
            row["inputs"] = None
            if not row.get("error"):
                row["error"] = self._prepare(preparer, row)
            row.pop("images")  # in the inputs now; the infer stage copies rows per config
        return rows_batch(rows)

    def _prepare(self, preparer, row: dict) -> Optional[str]:
        """Sets ``row["inputs"]``; returns why it could not (a row error), or None."""
        from pipeline import video
        from pipeline.infer import Request, decode_image

        request = Request(prompt=row["prompt"], max_new_tokens=int(row["max_new_tokens"]))
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


# The infer stage's result columns of a row it has not answered (yet, or for its error).
NO_ANSWER = dict(output=None, visual_tokens_before=0, visual_tokens_after=0, kept=None, new_tokens=0,
                 ttft_s=None, prefill_s=None, decode_s_per_token=None, select_s=None, peak_memory_mb=None,
                 spans=None, prompt_tokens=None, generate_s=None, batch_size=None)


class InferStage:
    """One model per actor; answers each row under every pruning config it carries,
    batch by batch: all rows of the batch under one config, then the next config."""

    def __init__(self, model: str, device: str = "cpu", dtype: Optional[str] = None,
                 threads: Optional[int] = None):
        import torch

        from pipeline.infer import Generator

        if threads:  # Ray pins OMP threads to the actor's num_cpus; CPU runs may want more
            torch.set_num_threads(threads)
        self.generator = Generator(model, device=device, dtype=dtype)
        self.generator.warm_up()  # the first batch's timings would carry one-off costs

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One output row per input row and config (``config``: that config's JSON)."""
        from pruning import PruningConfig

        started = time.time()
        rows = []
        for row in batch_rows(batch, INFER_COLUMNS, "infer"):
            prepared = pickle.loads(row.pop("inputs")) if row["inputs"] is not None else None
            for config_json in json.loads(row.pop("configs")):
                rows.append({**row, "config": config_json, "prepared": prepared, **NO_ANSWER})
        for config_json in sorted({row["config"] for row in rows}):
            group = [row for row in rows if row["config"] == config_json and not row["error"]]
            if group:
                self._answer(group, PruningConfig.from_dict(json.loads(config_json)))
        finished = time.time()
        for row in rows:
            del row["prepared"]
            # Wall-clock span of this actor call (epoch seconds): first start to last end
            # over all rows is the model stage's busy time, without actor start-up.
            row.update(infer_started=started, infer_finished=finished)
        return rows_batch(rows)

    def _answer(self, rows: list[dict], config) -> None:
        try:
            answers = self.generator.run_prepared([row["prepared"] for row in rows], config)
        except Exception:
            if len(rows) == 1:
                rows[0]["error"] = "model: " + traceback.format_exc(limit=2).strip().splitlines()[-1]
                return
            log.warning("batch of %d failed; retrying its samples one by one", len(rows))
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
                       batch_size=answer.batch_size)


class ScoreStage:
    """Parse each output and score it with its task's own metric (CPU)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch_rows(batch, ("task", "output", "answer", "meta", "error"), "score")
        for row in rows:
            row.update(parsed=None, score=0.0)
            if row["error"] or row["output"] is None:
                continue
            task = get_task(row["task"])
            sample = Sample(id=row["id"], prompt=row["prompt"], answer=json.loads(row["answer"]),
                            meta=json.loads(row["meta"]))
            try:
                parsed = task.parse(row["output"], sample)
                row.update(parsed=json.dumps(parsed), score=float(task.score(parsed, sample)))
            except Exception as exc:  # an unparseable answer scores 0 and says why
                row["error"] = f"score: {exc}"
        return rows_batch(rows)
