"""pipeline.infer: requests prepared one by one and collated are the batch the processor
gives for them together, so the pipeline may run the processor in its CPU stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.infer import WRAPPER_MAX_NEW_TOKENS, Generator, Preparer, Request, cut_at_stop
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


def test_stop_strings_end_the_answer_and_stop_generating(cache_dir):
    """lmms-eval's ``until``: the answer is the text before the first stop string, and
    generation stops once it appears (fewer new tokens); batch neighbours are unaffected."""
    generator = Generator("tiny:qwen2_vl", cache_dir=cache_dir)
    config = PruningConfig.none()
    prompt, picture = "What is shown?", _picture(64, 96, 1)
    full = generator.run([Request(prompt, images=[picture], max_new_tokens=16)], config)[0]
    text = full.text
    # a two-character stop string first seen in the middle of the answer
    k = next(k for k in range(1, len(text) - 2) if text.index(text[k:k + 2]) == k and " " not in text[k:k + 2])
    stopped = Request(prompt, images=[picture], max_new_tokens=16, until=("never", text[k:k + 2]))
    alone = generator.run([stopped], config)[0]
    assert alone.text == text[:k].strip()
    assert alone.new_tokens < full.new_tokens == 16
    neighbour = Request("Say something.", max_new_tokens=12)
    together = generator.run([stopped, neighbour], config)
    assert [a.text for a in together] == [alone.text, generator.run([neighbour], config)[0].text]
    assert together[0].new_tokens == alone.new_tokens and together[1].new_tokens == 12


def test_no_budget_means_the_families_lmms_eval_wrapper_default(cache_dir):
    generator = Generator("tiny:qwen2_vl", cache_dir=cache_dir)
    assert generator.default_max_new_tokens == WRAPPER_MAX_NEW_TOKENS["qwen2_vl"] == 128
    answer = generator.run([Request("Say something.", max_new_tokens=None)], PruningConfig.none())[0]
    assert answer.new_tokens == 128  # random weights never stop on their own


def test_cut_at_stop():
    assert cut_at_stop("B\n\nBecause", ["\n\n"]) == "B"
    assert cut_at_stop("x ASSISTANT: y \n\n z", ["\n\n", "ASSISTANT:"]) == "x "
    assert cut_at_stop("plain", []) == "plain" and cut_at_stop("plain", [""]) == "plain"
