"""pruning.apply on a model that accelerate dispatched over devices (``device_map``), as a
multi-GPU Ray actor loads it (``resources.num_gpus > 1``): the same kept tokens and
greedy tokens as the model on one device.

On the CPU the split is real dispatching, with accelerate's hooks on every module and
most weights offloaded to disk (moved in for each forward); with two GPUs, the decoder
layers are split between them."""

from __future__ import annotations

import pytest
import torch

import pruning
from pipeline.models import load_model
from pruning import PruningConfig
from tests.pruning.conftest import build_inputs, samples

FAMILY = "qwen2_vl"


def greedy(model, inputs, config, **kwargs):
    with pruning.apply(model, config) as handle:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, **kwargs)
        kept = [[s.keep for s in spans] for spans in handle.stats.samples]
    return out[:, inputs["input_ids"].shape[1]:].tolist(), kept


@pytest.fixture(scope="module")
def offloaded(tiny_cache, tmp_path_factory):
    model, _ = load_model(f"tiny:{FAMILY}", cache_dir=tiny_cache, device_map="auto",
                          max_memory={"cpu": "300KB"}, offload_folder=str(tmp_path_factory.mktemp("offload")))
    placements = set(model.hf_device_map.values())
    assert "disk" in placements, model.hf_device_map  # really dispatched, with hooks
    return model


@pytest.mark.parametrize("method", ["vlm_pruner", "fastv", "dart", "divprune"])
def test_a_dispatched_model_prunes_and_answers_as_on_one_device(tiny, offloaded, method):
    model, processor = tiny(FAMILY)
    inputs = build_inputs(processor, FAMILY, list(samples(FAMILY)))
    config = PruningConfig(method=method, pruning_rate=0.75)
    assert greedy(offloaded, inputs, config) == greedy(model, inputs, config)


def test_a_dispatched_model_decodes_with_the_cache_as_without(tiny, offloaded):
    _, processor = tiny(FAMILY)
    inputs = build_inputs(processor, FAMILY, list(samples(FAMILY)))
    config = PruningConfig(method="vlm_pruner", pruning_rate=0.889)
    assert greedy(offloaded, inputs, config) == greedy(offloaded, inputs, config, use_cache=False)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_layers_split_over_two_gpus_answer_as_on_one(tiny_cache):
    model, processor = load_model(f"tiny:{FAMILY}", cache_dir=tiny_cache, device="cuda:0")
    text = model.model.language_model
    split = {"model.visual": 0, "model.language_model.embed_tokens": 0, "model.language_model.rotary_emb": 0,
             "model.language_model.norm": 1, "lm_head": 1}
    split.update({f"model.language_model.layers.{i}": int(i >= 2) for i in range(len(text.layers))})
    spread, _ = load_model(f"tiny:{FAMILY}", cache_dir=tiny_cache, device_map=split)
    inputs = build_inputs(processor, FAMILY, list(samples(FAMILY))).to("cuda:0")
    for method in ("vlm_pruner", "fastv", "dart"):
        config = PruningConfig(method=method, pruning_rate=0.75)
        assert greedy(spread, inputs, config) == greedy(model, inputs, config), method
