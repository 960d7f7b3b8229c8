"""Tiny real models and mixed image / video / text batches for the engine tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers.video_utils import VideoMetadata

from pipeline.models import load_model

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VIDEO_FAMILIES = QWEN + ("llava_onevision",)


def image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def video(seed: int, frames: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8)


def samples(family: str) -> dict[str, dict]:
    """Named samples: media lists and a question. Image sizes differ so that samples
    carry different numbers of visual tokens (LLaVA resizes, so it varies the count)."""
    out = {
        "image": {"images": [image(224, 224, 0)], "videos": [], "text": "What is shown?"},
        "text": {"images": [], "videos": [], "text": "Say something about cats."},
    }
    if family == "llava":
        out["two_images"] = {"images": [image(200, 300, 1), image(336, 336, 2)], "videos": [],
                             "text": "Compare them."}
    else:
        out["small_image"] = {"images": [image(180, 100, 1)], "videos": [], "text": "Colour?"}
    if family in VIDEO_FAMILIES:
        out["video"] = {"images": [], "videos": [video(3)], "text": "What happens?"}
    return out


def build_inputs(processor, family: str, names: list[str]):
    """Processor inputs for the named samples, left-padded into one batch."""
    table = samples(family)
    texts, images, videos, metadata = [], [], [], []
    for name in names:
        s = table[name]
        content = ([{"type": "image"} for _ in s["images"]] + [{"type": "video"} for _ in s["videos"]]
                   + [{"type": "text", "text": s["text"]}])
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                   add_generation_prompt=True, tokenize=False))
        images += s["images"]
        videos += s["videos"]
        metadata += [VideoMetadata(total_num_frames=len(v), fps=2.0, frames_indices=list(range(len(v))))
                     for v in s["videos"]]
    kwargs = {"text": texts, "padding": True, "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
        if family == "qwen3_vl":
            kwargs["video_metadata"] = metadata
    processor.tokenizer.padding_side = "left"
    return processor(**kwargs)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny(tiny_cache):
    """tiny(family) -> (model, processor), loaded once per test session."""
    loaded = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_model(f"tiny:{family}", cache_dir=tiny_cache)
        return loaded[family]

    return get
