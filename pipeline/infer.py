"""Run a (pruned) VLM on a batch of samples: prompts, media, greedy generation, timings.

The one place that turns samples into processor inputs and model outputs. The Ray
actor stage, the plain-loop benchmark, the server and the annotation job all call
:class:`Generator`, so they measure and answer the same way.

Timings (per batch; every sample of a batch reports its batch's values):
    ttft_s        generate() start to the end of the first forward (vision encoder,
                  pruning and prefill included): time to first token.
    prefill_s     the first forward alone (the LLM prefill, with selection).
    decode_s_per_token  the remaining forwards divided by the tokens they produced.
    peak_memory_mb  CUDA peak allocated memory of the batch, or the process's peak RSS on CPU.
    generate_s    the whole generate() call (batch_size requests): per-config throughput.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image

import pruning
from pipeline.models import load_model
from pruning import PruningConfig

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision")


@dataclass
class Request:
    """What the model sees for one sample: prompt text, decoded images, video frames."""

    prompt: str
    images: list = field(default_factory=list)  # PIL images
    frames: Optional[np.ndarray] = None  # (T, H, W, 3) uint8
    fps: float = 1.0  # the source video's frame rate
    frame_indices: Optional[list[int]] = None  # where the frames sit in the source video
    max_new_tokens: int = 16


@dataclass
class Answer:
    """The model's answer to one request, with pruning stats and timings."""

    text: str = ""
    visual_tokens_before: int = 0
    visual_tokens_after: int = 0
    kept: list = field(default_factory=list)  # per span: kept indices into the span's grid
    spans: list = field(default_factory=list)  # per span: {"kind": "image", "grid": [T, H, W]}
    prompt_tokens: int = 0  # the prompt's tokens (visual ones included) before pruning
    new_tokens: int = 0
    ttft_s: float = 0.0
    prefill_s: float = 0.0
    decode_s_per_token: float = 0.0
    select_s: float = 0.0
    peak_memory_mb: float = 0.0
    generate_s: float = 0.0  # the batch's whole generate() call
    batch_size: int = 1  # requests in that call
    error: Optional[str] = None


def decode_image(data: bytes) -> Image.Image:
    with Image.open(BytesIO(data)) as image:
        return image.convert("RGB")


class Generator:
    """A loaded model and processor that answer batches of requests under a pruning config.

    The model is loaded once; ``run(requests, config)`` switches the pruning config per
    call (a new hook handle only when the pruning layer changes).
    """

    def __init__(self, model_spec: str, *, device: str = "cpu", dtype: Optional[str] = None,
                 attn_implementation: str = "sdpa"):
        self.model, self.processor = load_model(model_spec, dtype=dtype, device=device,
                                                attn_implementation=attn_implementation)
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.family = self.model.config.model_type
        self.device = torch.device(device)
        self._handle: Optional[pruning.PruningHandle] = None
        self._forward_times: list[float] = []
        self.model.register_forward_pre_hook(lambda *_: self._forward_times.append(time.perf_counter()))
        self.model.register_forward_hook(lambda *_: self._forward_times.append(time.perf_counter()))

    def use(self, config: PruningConfig) -> pruning.PruningHandle:
        """Install ``config`` (validated against this model before any work)."""
        config.check_against(self.model.config)
        if self._handle is not None and (config.layer or 0) == self._handle.layer:
            self._handle.config = config
        else:
            if self._handle is not None:
                self._handle.remove()
            self._handle = pruning.apply(self.model, config)
        return self._handle

    def warm_up(self) -> None:
        """Throwaway generates (a small picture; a short video where the family takes one;
        two tokens each), so that the first timed batches do not carry the one-off costs of
        a first call (lazy inits, thread pools; the first video batch took 15x its peers)."""
        picture = Image.new("RGB", (64, 64), (128, 128, 128))
        self.run([Request("Describe the picture.", images=[picture], max_new_tokens=2)], PruningConfig.none())
        if self.family in VIDEO_FAMILIES:
            frames = np.full((4, 64, 64, 3), 128, np.uint8)
            self.run([Request("Describe the video.", frames=frames, max_new_tokens=2)], PruningConfig.none())

    def check(self, request: Request) -> Optional[str]:
        """Why this model cannot take ``request``, or None."""
        if request.frames is not None and self.family not in VIDEO_FAMILIES:
            return f"{self.family} does not take video input"
        return None

    @torch.no_grad()
    def run(self, requests: Sequence[Request], config: PruningConfig) -> list[Answer]:
        """Greedy answers for ``requests`` as one left-padded batch."""
        handle = self.use(config)
        inputs = self._inputs(requests).to(self.device)
        max_new = max(r.max_new_tokens for r in requests)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._forward_times.clear()
        start = time.perf_counter()
        out = self.model.generate(**inputs, max_new_tokens=max_new, do_sample=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        times = self._forward_times
        first_end = times[1] if len(times) > 1 else end
        steps = max(len(times) // 2 - 1, 0)
        stats = handle.stats
        befores, afters = stats.visual_tokens() if stats else ([0] * len(requests),) * 2
        common = dict(
            ttft_s=first_end - start,
            prefill_s=(times[1] - times[0]) if len(times) > 1 else 0.0,
            decode_s_per_token=(end - first_end) / steps if steps else 0.0,
            select_s=stats.select_seconds if stats else 0.0,
            peak_memory_mb=_peak_memory_mb(self.device),
            generate_s=end - start,
            batch_size=len(requests),
        )
        generated = out[:, inputs["input_ids"].shape[1]:]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()  # padding left out
        answers = []
        for b, request in enumerate(requests):
            tokens = _until_eos(generated[b, :request.max_new_tokens], self._eos_ids())
            answers.append(Answer(
                text=self.processor.decode(tokens, skip_special_tokens=True).strip(),
                visual_tokens_before=befores[b], visual_tokens_after=afters[b],
                kept=[s.keep for s in stats.samples[b]] if stats else [],
                spans=[{"kind": s.kind, "grid": list(s.grid)} for s in stats.samples[b]] if stats else [],
                prompt_tokens=int(prompt_tokens[b]), new_tokens=len(tokens), **common))
        return answers

    def _inputs(self, requests: Sequence[Request]):
        texts, images, videos, metadata = [], [], [], []
        for r in requests:
            texts.append(chat_text(self.processor, r.prompt, images=len(r.images), video=r.frames is not None))
            images += r.images
            if r.frames is not None:
                videos.append(r.frames)
                metadata.append(_metadata(r))
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
            kwargs["do_sample_frames"] = False  # frames are already sampled uniformly
            if self.family == "qwen3_vl":
                kwargs["video_metadata"] = metadata
        return self.processor(**kwargs)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.processor.tokenizer.pad_token_id is not None:
            ids.add(self.processor.tokenizer.pad_token_id)
        return ids


def chat_text(processor, prompt: str, *, images: int = 0, video: bool = False) -> str:
    """One user turn through the model's chat template, ready for the answer: ``images``
    image placeholders, then a video one, then ``prompt`` (the order every family's
    template and processor expect)."""
    content = [{"type": "image"} for _ in range(images)] + ([{"type": "video"}] if video else [])
    content.append({"type": "text", "text": prompt})
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def _until_eos(tokens: torch.Tensor, eos: set[int]) -> list[int]:
    out = []
    for t in tokens.tolist():
        if t in eos:
            break
        out.append(t)
    return out


def _metadata(request: Request):
    """Where the given frames sit in the source video (Qwen3-VL prints their timestamps)."""
    from transformers.video_utils import VideoMetadata

    indices = request.frame_indices or list(range(len(request.frames)))
    return VideoMetadata(total_num_frames=max(indices) + 1, fps=request.fps, frames_indices=list(indices))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
