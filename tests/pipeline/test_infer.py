"""pipeline.infer: requests prepared one by one and collated are the batch the processor
gives for them together, so the pipeline may run the processor in its CPU stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.infer import Generator, Preparer, Request
from pipeline.models import TINY_MODELS, load_processor, model_config
from pruning import PruningConfig

FAMILIES = [spec.removeprefix("tiny:") for spec in TINY_MODELS]
VIDEO_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision"}


def _picture(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _clip(frames: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, side, side, 3), dtype=np.uint8)


def _requests(family: str) -> list[Request]:
    """Mixed sizes (different token counts: padding), a text-only request, two pictures in
    one request, and clips where the family takes video."""
    requests = [
        Request("What is shown?", images=[_picture(224, 224, 0)], max_new_tokens=3),
        Request("Describe the picture in a few words, please.", images=[_picture(160, 96, 1)], max_new_tokens=5),
        Request("Say something.", max_new_tokens=2),
        Request("Which one is brighter?", images=[_picture(96, 160, 2), _picture(224, 112, 3)]),
    ]
    if family in VIDEO_FAMILIES:
        requests += [
            Request("What happens?", frames=_clip(4, 112, 4), fps=2.0, frame_indices=[0, 2, 4, 6]),
            Request("What moves in this short clip?", frames=_clip(4, 224, 5), fps=4.0),
        ]
    return requests


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.mark.parametrize("family", FAMILIES)
def test_collated_prepared_requests_equal_the_batched_processor_call(family, cache_dir):
    spec = f"tiny:{family}"
    preparer = Preparer(load_processor(spec, cache_dir=cache_dir), model_config(spec, cache_dir=cache_dir).model_type)
    requests = _requests(family)
    batched = preparer.inputs(requests)
    collated = preparer.collate([preparer.prepare(r) for r in requests])
    assert list(collated) == list(batched), "same keys in the same order"
    for key in batched:
        assert collated[key].dtype == batched[key].dtype, key
        assert torch.equal(collated[key], batched[key]), key
    # A batch whose requests have no media at all, and a single request, too.
    for subset in (requests[2:3], requests[:1]):
        batched = preparer.inputs(subset)
        collated = preparer.collate([preparer.prepare(r) for r in subset])
        assert list(collated) == list(batched) and all(torch.equal(collated[k], batched[k]) for k in batched)


def test_run_prepared_answers_as_run(cache_dir):
    generator = Generator("tiny:qwen2_vl", cache_dir=cache_dir)
    requests = _requests("qwen2_vl")
    config = PruningConfig(method="vlm_pruner", pruning_rate=0.5)
    direct = generator.run(requests, config)
    prepared = generator.run_prepared([generator.preparer.prepare(r) for r in requests], config)
    assert [a.text for a in prepared] == [a.text for a in direct]
    assert [a.kept for a in prepared] == [a.kept for a in direct]
    assert [a.new_tokens for a in prepared] == [a.new_tokens for a in direct]


def test_collate_refuses_an_empty_batch(cache_dir):
    preparer = Preparer(load_processor("tiny:qwen2_vl", cache_dir=cache_dir), "qwen2_vl")
    with pytest.raises(ValueError, match="at least one"):
        preparer.collate([])
