"""Run a (pruned) VLM on a batch of samples: prompts, media, greedy generation, timings.

The one place that turns samples into processor inputs and model outputs. The Ray
actor stage, the plain-loop benchmark, the server and the annotation job all call
:class:`Generator`, so they measure and answer the same way.

Grid points of one batch share their common work (``Generator.shared``, pipeline/prefix.py):
the vision encoder runs once, and the decoder layers before a point's first pruning layer
run once for all points that prune there or deeper; their measured seconds are added
to each point's timings (``shared_s``), so every point reports its config's times alone.

Timings (per batch; every sample of a batch reports its batch's values):
    ttft_s        generate() start to the end of the first forward (vision encoder,
                  pruning and prefill included): time to first token.
    prefill_s     the first forward alone (the LLM prefill, with selection).
    decode_s_per_token  the remaining forwards divided by the tokens they produced.
    peak_memory_mb  CUDA peak allocated memory of the batch, or the process's peak RSS on CPU.
    generate_s    the whole generate() call (batch_size requests): per-config throughput.
    shared_s      of those seconds, the part computed once for the batch's grid points and
                  counted in (0 outside ``Generator.shared``).
"""

from __future__ import annotations

import contextlib
import functools
import resource
import time
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

import pruning
from pipeline.models import load_model
from pipeline.prefix import SharedPrefix, first_layer, shared_depth
from pruning import PruningConfig
from pruning.config import NO_PRUNING
from pruning.methods import get_method
from pruning.vision import VISION_SIGNALS

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision")
# New tokens when a request names no budget: what lmms-eval 0.7.3's wrapper of each family
# generates when a task's generation_kwargs name none (models/simple/qwen2_vl.py,
# chat/qwen2_5_vl.py, simple/qwen3_vl.py: 128; chat/llava_hf.py, simple/llava_onevision.py: 1024).
WRAPPER_MAX_NEW_TOKENS = {"qwen2_vl": 128, "qwen2_5_vl": 128, "qwen3_vl": 128, "llava": 1024,
                          "llava_onevision": 1024}


@dataclass
class Request:
    """What the model sees for one sample: prompt text, decoded images, video frames."""

    prompt: str
    images: list = field(default_factory=list)  # PIL images
    frames: Optional[np.ndarray] = None  # (T, H, W, 3) uint8
    fps: float = 1.0  # the source video's frame rate
    frame_indices: Optional[list[int]] = None  # where the frames sit in the source video
    max_new_tokens: Optional[int] = 16  # None: the family's WRAPPER_MAX_NEW_TOKENS
    until: tuple[str, ...] = ()  # stop strings: the answer ends before the first; generation stops there


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
    shared_s: float = 0.0  # seconds of the timings above computed once for the batch's grid points
    error: Optional[str] = None


def decode_image(data: bytes) -> Image.Image:
    with Image.open(BytesIO(data)) as image:
        return image.convert("RGB")


class Generator:
    """A loaded model and processor that answer batches of requests under a pruning config.

    The model is loaded once; ``run(requests, config)`` switches the pruning config per
    call (a new hook handle only when the pruning layers change). Inside
    ``with generator.shared(configs):`` the calls for the same prepared requests share
    the vision encoder and the lower decoder layers (pipeline/prefix.py).
    """

    def __init__(self, model_spec: str, *, device: str = "cpu", dtype: Optional[str] = None,
                 attn_implementation: str = "sdpa", cache_dir: Optional[str] = None,
                 device_map: Optional[str | dict] = None, **load_kwargs):
        model, processor = load_model(model_spec, dtype=dtype, device=device,
                                      attn_implementation=attn_implementation, cache_dir=cache_dir,
                                      device_map=device_map, **load_kwargs)
        self._setup(model, processor, device, device_map)

    @classmethod
    def from_model(cls, model, processor, device: str = "cpu") -> "Generator":
        """A generator around a model already built (benchmarks: a random mid-size model)."""
        generator = cls.__new__(cls)
        generator._setup(model, processor, device, None)
        return generator

    def _setup(self, model, processor, device, device_map) -> None:
        self.model, self.processor = model, processor
        self.family = self.model.config.model_type
        self.preparer = Preparer(self.processor, self.family)
        # Where inputs go: the device, or with a device_map the first GPU (the embeddings'
        # under "auto"; accelerate moves each layer's inputs to its own device).
        self.device = torch.device(device) if device_map is None else \
            torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self._handle: Optional[pruning.PruningHandle] = None
        self._forward_times: list[float] = []
        self.model.register_forward_pre_hook(lambda *_: self._forward_times.append(time.perf_counter()))
        self.model.register_forward_hook(lambda *_: self._forward_times.append(time.perf_counter()))
        self.prefix = SharedPrefix(self.model, on_replay=self._replayed)
        self._share: Optional[dict] = None  # inside shared(): depth and the collated batches

    def use(self, config: PruningConfig) -> pruning.PruningHandle:
        """Install ``config`` (validated against this model before any work)."""
        config.check_against(self.model.config)
        if config.method != NO_PRUNING and (warm_up := get_method(config.method).warm_up) is not None:
            warm_up(str(self.device))  # compiled kernels, once per process, before timing
        if self._handle is not None and self._handle.accepts(config):
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
        return self.preparer.check(request)

    def run(self, requests: Sequence[Request], config: PruningConfig) -> list[Answer]:
        """Greedy answers for ``requests`` as one left-padded batch."""
        return self.generate(self.preparer.inputs(requests), [r.max_new_tokens for r in requests], config,
                             [r.until for r in requests])

    def run_prepared(self, prepared: Sequence[Prepared], config: PruningConfig) -> list[Answer]:
        """:meth:`run` for requests already through :meth:`Preparer.prepare` (elsewhere,
        e.g. in the pipeline's CPU stage): only collation and the model run here. Inside
        :meth:`shared`, the same ``prepared`` objects are collated once and their calls
        share the vision encoder and the lower layers."""
        key = None
        if self._share is not None:
            key = tuple(id(p) for p in prepared)
            if self._share["key"] != key:  # another batch (prefix.begin drops the previous record)
                # ``held`` keeps the requests alive, so that their ids cannot be reused by others.
                self._share.update(key=key, inputs=self.preparer.collate(prepared).to(self.device),
                                   held=list(prepared))
            inputs = self._share["inputs"]
        else:
            inputs = self.preparer.collate(prepared)
        return self.generate(inputs, [p.max_new_tokens for p in prepared], config, [p.until for p in prepared],
                             share_key=key)

    @contextlib.contextmanager
    def shared(self, configs: Sequence[PruningConfig]):
        """Within the block, :meth:`run_prepared` calls for the same prepared requests under
        ``configs`` compute the vision encoder once and each decoder layer below the
        points' first pruning layers once (pipeline/prefix.py); outputs are those of each
        call alone, timings include the shared seconds. The record is freed on exit."""
        self._share = {"depth": shared_depth(configs, len(self.prefix.layers)), "key": None}
        try:
            yield self
        finally:
            self._share = None
            self.prefix.drop()

    def _replayed(self, index: int, hidden_states, kwargs) -> None:
        if self._handle is not None:
            self._handle.replayed_layer(index, hidden_states, kwargs)

    @torch.no_grad()
    def generate(self, inputs, max_new_tokens: Sequence[Optional[int]], config: PruningConfig,
                 until: Optional[Sequence[Sequence[str]]] = None, share_key=None) -> list[Answer]:
        """Greedy answers for a batch of processor ``inputs`` (one per request), each cut at
        its own ``max_new_tokens`` (None: the family's :data:`WRAPPER_MAX_NEW_TOKENS`) and
        before the first of its stop strings ``until``, as lmms-eval's wrappers cut. A
        request stops generating once it has either (the batch runs until all have)."""
        handle = self.use(config)
        inputs = inputs.to(self.device)
        max_new_tokens = [self.default_max_new_tokens if n is None else n for n in max_new_tokens]
        stops = [tuple(s) for s in until] if until is not None else [()] * len(max_new_tokens)
        max_new = max(max_new_tokens)
        prompt_length = inputs["input_ids"].shape[1]
        criteria = StoppingCriteriaList([_StopAt(self.processor.tokenizer, prompt_length, max_new_tokens, stops)])
        if self.device.type == "cuda":
            for index in range(torch.cuda.device_count()):  # every GPU a split model uses
                torch.cuda.synchronize(index)
                torch.cuda.reset_peak_memory_stats(index)
        if share_key is not None:
            self.prefix.begin(share_key, self._share["depth"])
            reads = set() if config.method == NO_PRUNING else set(get_method(config.method).signals)
            self.prefix.arm(first_layer(config, len(self.prefix.layers)), vision_ok=not VISION_SIGNALS & reads)
        self._forward_times.clear()
        start = time.perf_counter()
        try:
            out = self.model.generate(**inputs, max_new_tokens=max_new, do_sample=False,
                                      stopping_criteria=criteria)
        finally:
            shared = self.prefix.disarm()
        if self.device.type == "cuda":
            for index in range(torch.cuda.device_count()):
                torch.cuda.synchronize(index)
        end = time.perf_counter()
        times = self._forward_times
        first_end = times[1] if len(times) > 1 else end
        steps = max(len(times) // 2 - 1, 0)
        stats = handle.stats
        befores, afters = stats.visual_tokens() if stats else ([0] * len(max_new_tokens),) * 2
        # Shared seconds count as this call's own: the layers in its prefill, the encoder in
        # its TTFT (and prefill, where the model encodes inside its forward).
        common = dict(
            ttft_s=first_end - start + shared.total_s,
            prefill_s=((times[1] - times[0]) if len(times) > 1 else 0.0) + shared.layers_s
            + shared.vision_in_prefill_s,
            decode_s_per_token=(end - first_end) / steps if steps else 0.0,
            select_s=stats.select_seconds if stats else 0.0,
            peak_memory_mb=_peak_memory_mb(self.device),
            generate_s=end - start + shared.total_s,
            batch_size=len(max_new_tokens),
            shared_s=shared.total_s,
        )
        generated = out[:, prompt_length:]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()  # padding left out
        answers = []
        for b, limit in enumerate(max_new_tokens):
            tokens = _until_eos(generated[b, :limit], self._eos_ids())
            answers.append(Answer(
                text=cut_at_stop(self.processor.decode(tokens, skip_special_tokens=True), stops[b]).strip(),
                visual_tokens_before=befores[b], visual_tokens_after=afters[b],
                kept=[s.keep for s in stats.samples[b]] if stats else [],
                spans=[{"kind": s.kind, "grid": list(s.grid)} for s in stats.samples[b]] if stats else [],
                prompt_tokens=int(prompt_tokens[b]), new_tokens=len(tokens), **common))
        return answers

    @property
    def default_max_new_tokens(self) -> int:
        return WRAPPER_MAX_NEW_TOKENS.get(self.family, 128)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.processor.tokenizer.pad_token_id is not None:
            ids.add(self.processor.tokenizer.pad_token_id)
        return ids


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of ``stops`` (lmms-eval's ``until``).

    >>> cut_at_stop("B\n\nBecause", ["\n\n"])
    'B'
    """
    end = min([text.index(s) for s in stops if s and s in text], default=len(text))
    return text[:end]


class _StopAt(StoppingCriteria):
    """Per request: done once its generated text (the prompt left out) holds one of its
    stop strings, or it has its ``max_new_tokens``. The tail decoded each step is long
    enough to hold the longest stop string, which can end only in the newest token."""

    def __init__(self, tokenizer, prompt_length: int, max_new_tokens: Sequence[int], stops: Sequence[tuple]):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length
        self.max_new_tokens, self.stops = list(max_new_tokens), list(stops)
        self.window = 4 * max((len(s) for ss in stops for s in ss), default=0) + 4

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        generated = input_ids[:, self.prompt_length:]  # (B, new)
        done = []
        for b, (limit, stops) in enumerate(zip(self.max_new_tokens, self.stops)):
            tail = self.tokenizer.decode(generated[b, -self.window:], skip_special_tokens=True) if stops else ""
            done.append(generated.shape[1] >= limit or any(s and s in tail for s in stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass
class Prepared:
    """One request through the processor: its model inputs with a batch of one (numpy,
    so that it pickles compactly between pipeline stages)."""

    inputs: dict[str, np.ndarray]
    max_new_tokens: Optional[int] = 16
    until: tuple[str, ...] = ()


class Preparer:
    """Requests -> model inputs, with the processor alone (no model: runs on any CPU).

    ``inputs(requests)`` is one batched processor call; ``prepare(request)`` does one
    request, and ``collate`` joins prepared requests into exactly what ``inputs`` gives
    for them together (tests check this per family), so the pipeline can run the
    processor in its CPU stage and leave the model's actor nothing but the model.
    """

    def __init__(self, processor, family: str):
        self.processor, self.family = processor, family
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right

    @classmethod
    def from_spec(cls, spec: str) -> "Preparer":
        """The preparer of model ``spec`` (its processor and config, no weights), loaded once
        per process."""
        return _preparer(spec)

    def check(self, request: Request) -> Optional[str]:
        """Why this model cannot take ``request``, or None."""
        if request.frames is not None and self.family not in VIDEO_FAMILIES:
            return f"{self.family} does not take video input"
        return None

    def inputs(self, requests: Sequence[Request]):
        """The processor's batch (left-padded) for ``requests``."""
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

    def prepare(self, request: Request) -> Prepared:
        """``request`` alone through the processor."""
        batch = self.inputs([request])
        return Prepared({k: v.numpy() for k, v in batch.items()}, request.max_new_tokens, tuple(request.until))

    def collate(self, prepared: Sequence[Prepared]):
        """The batch ``inputs`` would give for the prepared requests together.

        Per-token arrays (the shape of ``input_ids``) are left-padded, ``input_ids`` with
        the pad token and the others with 0; media arrays are concatenated along the
        first axis, zero-padding axis 1 where its sizes differ (LLaVA-OneVision's
        per-image patch counts, padded the same way by its processor)."""
        from transformers import BatchFeature

        if not prepared:
            raise ValueError("collate needs at least one prepared request")
        length = max(p.inputs["input_ids"].shape[1] for p in prepared)
        out = {}
        for key in dict.fromkeys(k for p in prepared for k in p.inputs):  # media may be in some only
            have = [p for p in prepared if key in p.inputs]
            arrays = [p.inputs[key] for p in have]
            if len(have) == len(prepared) and all(p.inputs[key].shape == p.inputs["input_ids"].shape for p in have):
                fill = self.processor.tokenizer.pad_token_id if key == "input_ids" else 0
                out[key] = np.stack([np.pad(a[0], (length - a.shape[1], 0), constant_values=fill) for a in arrays])
            else:
                out[key] = _concat_padded(arrays)
        return BatchFeature({k: torch.from_numpy(v) for k, v in out.items()})


def _concat_padded(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate along axis 0, zero-padding axis 1 to its largest size when they differ."""
    if arrays[0].ndim > 1 and len({a.shape[1] for a in arrays}) > 1:
        width = max(a.shape[1] for a in arrays)
        arrays = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays]
    return np.concatenate(arrays, axis=0)


@functools.cache
def _preparer(spec: str) -> Preparer:
    from pipeline.models import load_processor, model_config

    return Preparer(load_processor(spec), model_config(spec).model_type)


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
    """CUDA peak allocated memory over every GPU this process sees (an actor's, for a
    model split over them), or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
