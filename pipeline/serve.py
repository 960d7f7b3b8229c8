"""Online serving: an OpenAI-style chat completions endpoint for a pruned VLM (Ray Serve).

    serve run pipeline.serve:app                                   # tiny:qwen2_vl, unpruned
    serve run pipeline.serve:build model=Qwen/Qwen2-VL-2B-Instruct method=vlm_pruner \\
        pruning_rate=0.889 num_gpus=1 max_frames=32               # any ServeConfig field

    serve run pipeline.serve:build media_roots=/data/images,/data/videos   # let requests name files there

    curl -s 127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR..."}},
        {"type": "text", "text": "What is this?"}]}],
        "max_tokens": 16, "pruning": {"method": "fastv", "pruning_rate": 0.75}}'

Routes: ``POST /v1/chat/completions`` (request format: ``pipeline.chat``),
``GET /healthz``, ``GET /v1/models``. The answer is a ``chat.completion`` object plus
``pruning``: the config it ran under, visual tokens before/after, prefill time and
time to first token (``pipeline.infer``'s timings, of the batch it ran in).

Media: requests send images and video as ``data:`` URLs. The server reads files of its
own disk only under the folders of ``media_roots`` (then ``file://`` URLs and absolute
paths resolving inside them are read, symbolic links followed); by default there are
none, and every path is refused. Prompt tokens, bytes and decoded pixels per image and
per request are limited (``pipeline.chat.Limits``, one ServeConfig field each).

Each replica loads the model once and answers every pruning config with it. A request
is parsed and validated (JSON, media, limits, pruning config) before it joins the
batch queue, so a bad one gets its 4xx alone; ``@serve.batch`` then gathers up to
``max_batch_size`` requests, groups them by pruning config and runs each group as one
left-padded batch. When a batch still fails inside the model, its requests are retried
one by one so that only the one that caused it fails (422 for an input the model's
processor refuses, 500 otherwise).
"""

import asyncio
import copy
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping  # no `from __future__ import annotations`: FastAPI reads the hints
from dataclasses import dataclass
from typing import Any, Optional, Union

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve

from pipeline.chat import CHARS_PER_TOKEN_BOUND, BadRequest, Limits, parse_chat
from pipeline.infer import Answer, Generator, Request
from pruning import PruningConfig

log = logging.getLogger("ray.serve")


class ServeConfig(BaseModel):
    """One deployment: the model, its default pruning config, limits and resources.

    ``serve run pipeline.serve:build name=value ...`` fills it (values are parsed to
    the field's type; an unknown name is an error).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("tiny:qwen2_vl", description="local path, hub id or tiny:<family>")
    method: str = Field("none", description="default pruning method, or 'none' (unpruned)")
    pruning_rate: Optional[float] = Field(None, description="default share of visual tokens removed, [0, 1)")
    num_retain: Optional[int] = Field(None, description="default visual tokens kept per span (instead of a rate)")
    layer: Optional[int] = Field(None, description="default pruning layer K (method default if unset)")
    params: dict[str, Any] = Field(default_factory=dict, description="default method parameters")
    device: Optional[str] = Field(None, description="torch device (default: cuda with a GPU, else cpu)")
    dtype: Optional[str] = Field(None, description="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    max_batch_size: int = Field(8, ge=1, description="requests per model batch at most")
    batch_wait_timeout_s: float = Field(0.02, ge=0, description="how long a batch waits to fill")
    max_ongoing_requests: int = Field(64, ge=1, description="requests a replica holds at once (queued included)")
    num_replicas: int = Field(1, ge=1, description="model replicas (one model each)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per replica (torch threads follow it on CPU)")
    max_image_bytes: int = Field(Limits.max_image_bytes, ge=1, description="encoded bytes per image at most")
    max_video_bytes: int = Field(Limits.max_video_bytes, ge=1, description="encoded bytes of the video at most")
    max_image_pixels: int = Field(Limits.max_image_pixels, ge=1, description="decoded pixels per image at most")
    max_request_pixels: int = Field(Limits.max_request_pixels, ge=1,
                                    description="decoded pixels per request at most (images and video frames)")
    max_prompt_tokens: int = Field(Limits.max_prompt_tokens, ge=1, description="prompt text tokens at most")
    max_images: int = Field(Limits.max_images, ge=0, description="images per request at most")
    max_frames: int = Field(Limits.max_frames, ge=1, description="frames sampled per video at most")
    frames: int = Field(Limits.frames, ge=1, description="frames sampled when a request does not say")
    max_pixels: Optional[int] = Field(None, ge=1, description="resize video frames to at most this many pixels")
    max_tokens: int = Field(Limits.max_tokens, ge=1, description="the largest max_tokens a request may ask")
    default_max_tokens: int = Field(Limits.default_max_tokens, ge=1, description="max_tokens when unset")
    media_roots: tuple[str, ...] = Field((), description="folders whose files requests may name (comma-separated "
                                                       "on the command line); none: data URLs only")

    @field_validator("media_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):  # serve run ... media_roots=/a,/b
            value = [part for part in value.split(",") if part.strip()]
        for root in value if isinstance(value, (list, tuple)) else ():
            if not os.path.isdir(os.path.expanduser(str(root))):
                raise ValueError(f"media_roots: {root!r} is not a folder on this machine")
        return value

    def default_pruning(self) -> PruningConfig:
        values = {"method": self.method, "pruning_rate": self.pruning_rate, "num_retain": self.num_retain,
                  "layer": self.layer, "params": self.params}
        return PruningConfig.from_dict({k: v for k, v in values.items() if v is not None})

    def limits(self) -> Limits:
        return Limits(max_image_bytes=self.max_image_bytes, max_video_bytes=self.max_video_bytes,
                      max_image_pixels=self.max_image_pixels, max_request_pixels=self.max_request_pixels,
                      max_prompt_tokens=self.max_prompt_tokens, max_images=self.max_images,
                      max_frames=self.max_frames, frames=min(self.frames, self.max_frames),
                      max_pixels=self.max_pixels, max_tokens=self.max_tokens,
                      default_max_tokens=min(self.default_max_tokens, self.max_tokens),
                      media_roots=tuple(self.media_roots))


@dataclass
class Answered:
    """The model's answer to one request, and how many requests shared its batch."""

    answer: Answer
    batch_size: int


@dataclass
class Failure:
    """Why the model failed on one request (after the one-by-one retry)."""

    status: int
    message: str


def _error(status: int, message: str, param: Optional[str] = None) -> JSONResponse:
    """An OpenAI-style error body."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


async def _read_body(http: HttpRequest, limit: int) -> Optional[bytes]:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = http.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


api = FastAPI(title="Pruned VLM chat completions",
              description="OpenAI-style /v1/chat/completions with per-request visual token pruning")


# Ray pickles the deployment class when it is decorated: what its methods use must be
# defined above it.
@serve.deployment
@serve.ingress(api)
class ChatServer:
    """One replica: one loaded model answering every pruning config."""

    def __init__(self, config: ServeConfig):
        import torch

        self.config = config
        device = config.device or ("cuda" if config.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        self.generator = Generator(config.model, device=device, dtype=config.dtype)
        self.default_pruning = config.default_pruning().check_against(self.generator.model.config)
        self.generator.warm_up()  # one-off first-call costs before the first request, not in it
        self.limits = config.limits()
        # Every image and the video as base64, plus room for text: a bigger body is refused unread.
        self.max_body_bytes = ((self.limits.max_images * self.limits.max_image_bytes + self.limits.max_video_bytes)
                               * 4 // 3 + self.limits.max_prompt_tokens * CHARS_PER_TOKEN_BOUND + 2**20)
        # Prompts are counted off the event loop, beside the model's own processor: a copy
        # of the tokenizer, one thread at a time (a Rust tokenizer is not shareable).
        self._tokenizer = copy.deepcopy(self.generator.processor.tokenizer)
        self._tokenizer_lock = threading.Lock()
        self._answer_batch.set_max_batch_size(config.max_batch_size)
        self._answer_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model": self.config.model, "pruning": self.default_pruning.flat()}

    @api.get("/v1/models")
    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.config.model, "object": "model", "owned_by": "local"}]}

    def _count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    @api.post("/v1/chat/completions")
    async def chat_completions(self, http: HttpRequest) -> JSONResponse:
        data = await _read_body(http, self.max_body_bytes)
        if data is None:
            return _error(413, f"the request body is larger than {self.max_body_bytes} bytes (the media limits "
                               "as base64, plus the prompt's)")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the request body is not valid JSON: {exc}")
        try:
            # Media are read and checked off the event loop, before the batch queue.
            parsed = await asyncio.to_thread(parse_chat, body, self.default_pruning, self.limits, self._count_tokens)
            parsed.config.check_against(self.generator.model.config)
            problem = self.generator.check(parsed.request)
            if problem:
                raise BadRequest(problem, param="messages")
        except BadRequest as exc:
            return _error(exc.status, str(exc), exc.param)
        except ValueError as exc:  # the config's layer against this model
            return _error(400, f"pruning: {exc}", "pruning")
        created = int(time.time())
        result = await self._answer_batch((parsed.request, parsed.config))
        if isinstance(result, Failure):
            return _error(result.status, result.message)
        return JSONResponse(self._completion(result, parsed.request, parsed.config, created))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # both reset from the config in __init__
    async def _answer_batch(self, items: list[tuple[Request, PruningConfig]]) -> list[Union[Answered, Failure]]:
        groups: dict[PruningConfig, list[int]] = {}
        for i, (_, config) in enumerate(items):
            groups.setdefault(config, []).append(i)
        results: list[Union[Answered, Failure, None]] = [None] * len(items)
        for config, indices in groups.items():
            # One group at a time (the Generator is not thread-safe); the event loop stays
            # free to parse and validate the requests that arrive meanwhile.
            answers = await asyncio.to_thread(self._run, [items[i][0] for i in indices], config)
            for i, answer in zip(indices, answers):
                results[i] = answer
        return results

    def _run(self, requests: list[Request], config: PruningConfig) -> list[Union[Answered, Failure]]:
        """Answers for one group; when the batch fails, each request alone, so that only
        the ones that cause the failure fail."""
        try:
            return [Answered(answer, len(requests)) for answer in self.generator.run(requests, config)]
        except Exception as exc:
            if len(requests) == 1:
                log.warning("request failed in the model: %s: %s", type(exc).__name__, exc)
                status = 422 if isinstance(exc, ValueError) else 500
                return [Failure(status, f"the model failed on this request: {type(exc).__name__}: {exc}")]
            log.warning("batch of %d failed (%s: %s); retrying its requests one by one",
                        len(requests), type(exc).__name__, exc)
            return [self._run([request], config)[0] for request in requests]

    def _completion(self, answered: Answered, request: Request, config: PruningConfig, created: int) -> dict:
        answer = answered.answer
        finish = "length" if answer.new_tokens >= request.max_new_tokens else "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created,
            "model": self.config.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.new_tokens,
                      "total_tokens": answer.prompt_tokens + answer.new_tokens},
            "pruning": {"config": config.flat(),
                        "visual_tokens_before": answer.visual_tokens_before,
                        "visual_tokens_after": answer.visual_tokens_after,
                        "prefill_s": answer.prefill_s, "ttft_s": answer.ttft_s, "select_s": answer.select_s,
                        "batch_size": answered.batch_size},
        }


def build(args: Mapping[str, Any]) -> serve.Application:
    """The application for ``args`` (``serve run pipeline.serve:build name=value ...``):
    a ServeConfig or the mapping of its fields; the default pruning config is checked here."""
    config = args if isinstance(args, ServeConfig) else ServeConfig.model_validate(dict(args))
    config.default_pruning()  # a bad default fails the build, not each replica
    return ChatServer.options(
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
    ).bind(config)


app = build({})
