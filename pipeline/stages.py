"""The pipeline's stages, one class each: read -> decode -> infer -> score.

Rows are plain dicts (Ray Data blocks), so any stage can run anywhere in the cluster:

    read    (driver)      task rows -> Sample -> row: index, id, task, prompt, images
                          (encoded bytes), video (path), answer/meta (JSON), error, config
    decode  (CPU tasks)   video path -> frames (raw uint8 bytes + shape), fps, indices
    infer   (actor pool)  one model per actor, loaded once; rows grouped by pruning config
    score   (CPU tasks)   task.parse + task.score

A row whose sample failed anywhere keeps flowing with ``error`` set, so every input
yields exactly one output row. Every stage declares the columns it needs.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.tasks import Sample, get_task

log = logging.getLogger(__name__)

# Columns a row carries from the read stage on.
READ_COLUMNS = ("index", "id", "task", "prompt", "images", "video", "answer", "meta", "error",
                "max_new_tokens", "config")


def sample_to_row(index: int, task: str, sample: Sample, config: dict) -> dict:
    """The read stage's output row for one sample under one pruning config."""
    return {
        "index": index, "id": str(sample.id), "task": task, "prompt": sample.prompt,
        "images": list(sample.images), "video": sample.video,
        "answer": json.dumps(sample.answer), "meta": json.dumps(sample.meta, default=str),
        "error": sample.error, "max_new_tokens": int(sample.max_new_tokens),
        "config": json.dumps(config, sort_keys=True),
    }


def _require(batch: pd.DataFrame, columns, stage: str) -> None:
    missing = [c for c in columns if c not in batch.columns]
    if missing:
        raise ValueError(f"{stage} stage needs columns {missing}; got {list(batch.columns)}")


class DecodeStage:
    """Video path -> uniformly sampled frames, resized to a pixel budget (CPU)."""

    def __init__(self, frames: int = 32, max_pixels: Optional[int] = None):
        self.frames, self.max_pixels = frames, max_pixels

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from pipeline import video

        _require(batch, ("video", "error"), "decode")
        rows = batch.to_dict("records")
        for row in rows:
            row.update(frames=None, frames_shape=None, fps=None, frame_indices=None)
            if not row.get("video") or row.get("error"):
                continue
            try:
                clip = video.read_clip(row["video"], self.frames, max_pixels=self.max_pixels)
                row.update(frames=clip.frames.tobytes(), frames_shape=list(clip.frames.shape),
                           fps=float(clip.fps), frame_indices=[int(i) for i in clip.indices])
            except Exception as exc:  # a corrupt or missing video is a row error
                row["error"] = f"video: {exc}"
        return pd.DataFrame(rows)


class InferStage:
    """One model per actor; answers each row under the pruning config it carries."""

    def __init__(self, model: str, device: str = "cpu", dtype: Optional[str] = None,
                 threads: Optional[int] = None):
        import torch

        from pipeline.infer import Generator

        if threads:  # Ray pins OMP threads to the actor's num_cpus; CPU runs may want more
            torch.set_num_threads(threads)
        self.generator = Generator(model, device=device, dtype=dtype)
        self.generator.warm_up()  # the first batch's timings would carry one-off costs

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from pruning import PruningConfig

        _require(batch, READ_COLUMNS, "infer")
        started = time.time()
        rows = batch.to_dict("records")
        for row in rows:
            row.update(output=None, visual_tokens_before=0, visual_tokens_after=0, kept=None,
                       new_tokens=0, ttft_s=None, prefill_s=None, decode_s_per_token=None,
                       select_s=None, peak_memory_mb=None, spans=None, prompt_tokens=None,
                       generate_s=None, batch_size=None)
        for config_json in sorted({row["config"] for row in rows}):
            group = [row for row in rows if row["config"] == config_json and not row["error"]]
            if group:
                self._answer(group, PruningConfig.from_dict(json.loads(config_json)))
        finished = time.time()
        for row in rows:
            row.pop("frames", None)
            # Wall-clock span of this actor call (epoch seconds): first start to last end
            # over all rows is the model stage's busy time, without actor start-up.
            row.update(infer_started=started, infer_finished=finished)
        return pd.DataFrame(rows)

    def _answer(self, rows: list[dict], config) -> None:
        requests = []
        for row in rows:
            try:
                request = self._request(row)
                problem = self.generator.check(request)
            except Exception as exc:
                request, problem = None, f"input: {exc}"
            if problem:
                row["error"] = problem
            requests.append(request)
        ready = [(row, req) for row, req in zip(rows, requests) if not row["error"]]
        if not ready:
            return
        try:
            answers = self.generator.run([req for _, req in ready], config)
        except Exception:
            if len(ready) == 1:
                ready[0][0]["error"] = "model: " + traceback.format_exc(limit=2).strip().splitlines()[-1]
                return
            log.warning("batch of %d failed; retrying its samples one by one", len(ready))
            for row, _ in ready:
                self._answer([row], config)
            return
        for (row, _), answer in zip(ready, answers):
            row.update(output=answer.text, visual_tokens_before=answer.visual_tokens_before,
                       visual_tokens_after=answer.visual_tokens_after, kept=json.dumps(answer.kept),
                       new_tokens=answer.new_tokens, ttft_s=answer.ttft_s, prefill_s=answer.prefill_s,
                       decode_s_per_token=answer.decode_s_per_token, select_s=answer.select_s,
                       peak_memory_mb=answer.peak_memory_mb, spans=json.dumps(answer.spans),
                       prompt_tokens=answer.prompt_tokens, generate_s=answer.generate_s,
                       batch_size=answer.batch_size)

    @staticmethod
    def _request(row: dict):
        from pipeline.infer import Request, decode_image

        frames = None
        if row.get("frames") is not None:
            frames = np.frombuffer(row["frames"], dtype=np.uint8).reshape(row["frames_shape"])
        return Request(prompt=row["prompt"], images=[decode_image(b) for b in (row["images"] or [])],
                       frames=frames, fps=row.get("fps") or 1.0,
                       frame_indices=list(row["frame_indices"]) if row.get("frame_indices") is not None else None,
                       max_new_tokens=int(row["max_new_tokens"]))


class ScoreStage:
    """Parse each output and score it with its task's own metric (CPU)."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        _require(batch, ("task", "output", "answer", "meta", "error"), "score")
        rows = batch.to_dict("records")
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
        return pd.DataFrame(rows)
