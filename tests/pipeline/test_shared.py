"""Grid points of a batch share the vision encoder and their common lower layers
(pipeline/prefix.py): every answer equals the one the point gives alone, on every tiny
family and every method, with images, video and text-only prompts in one batch."""

from __future__ import annotations

import random

import pytest

from pipeline.infer import Generator, Request
from pipeline.prefix import shared_depth
from pruning import PruningConfig
from pruning.methods import get_method, list_methods
from tests.pruning.conftest import samples

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "llava_onevision"]


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tiny-models")
    loaded = {}

    def get(family):
        if family not in loaded:
            loaded[family] = Generator(f"tiny:{family}", cache_dir=cache)
        return loaded[family]

    return get


def grid() -> list[PruningConfig]:
    """The baseline, every method at its default layer (progressive ones over the tiny
    models' layers), and points at other layers, progressive and renumbered."""
    configs = [PruningConfig.none()]
    for method in list_methods():
        values = {"method": method, "pruning_rate": 0.75}
        if get_method(method).default_stages:
            values["stages"] = [1, 2, 3]
        configs.append(PruningConfig.from_dict(values))
    configs += [PruningConfig("vlm_pruner", pruning_rate=0.5, layer=3),
                PruningConfig("fastv", pruning_rate=0.889, layer=1),
                PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.8, "stages": [2, 3]}),
                PruningConfig("divprune", pruning_rate=0.75, positions="renumbered")]
    return configs


def prepared_batch(generator, family):
    requests = [Request(s["text"], images=s["images"], frames=s["videos"][0] if s["videos"] else None,
                        max_new_tokens=5) for s in samples(family).values()]
    return [generator.preparer.prepare(r) for r in requests]


def _essentials(answers):
    return [(a.text, a.kept, a.spans, a.visual_tokens_before, a.visual_tokens_after, a.new_tokens, a.error)
            for a in answers]


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_answers_equal_each_point_alone(generators, family):
    generator = generators(family)
    prepared = prepared_batch(generator, family)
    configs = grid()
    alone = [_essentials(generator.run_prepared(prepared, c)) for c in configs]
    order = list(range(len(configs)))
    random.Random(family).shuffle(order)  # the record does not depend on which point runs first
    shared = {}
    with generator.shared(configs):
        for i in order:
            shared[i] = generator.run_prepared(prepared, configs[i])
        recorded = sorted(generator.prefix._recorded)
    for i, config in enumerate(configs):
        assert _essentials(shared[i]) == alone[i], f"{config.flat()}: the shared answers differ"
    layers = len(generator.prefix.layers)
    assert recorded == list(range(shared_depth(configs, layers)))
    # Every point but the first reuses the encoder; one at layer K replays layers < K unless it recorded them.
    reused = [i for i in order[1:] if shared[i][0].shared_s > 0]
    assert len(reused) >= len(configs) - 2
    assert shared[order[0]][0].shared_s == 0
    assert generator.prefix._recorded == {} and not generator.prefix.active  # freed after the block


def test_timings_count_the_shared_seconds(generators):
    """A point that replays reports the recorded seconds in its own times: the encoder's
    in its TTFT, the layers' in its prefill too."""
    generator = generators("qwen2_vl")
    prepared = prepared_batch(generator, "qwen2_vl")
    configs = [PruningConfig.none(), PruningConfig("vlm_pruner", pruning_rate=0.75)]  # K = 2
    with generator.shared(configs):
        first = generator.run_prepared(prepared, configs[0])[0]
        layers = {i: r.seconds for i, r in generator.prefix._recorded.items()}
        encoders = [e.seconds for e in generator.prefix._encoded.values()]
        second = generator.run_prepared(prepared, configs[1])[0]
    assert first.shared_s == 0.0
    assert sorted(layers) == [0, 1] and len(encoders) == 2  # the image and the video encoder calls
    assert second.shared_s == pytest.approx(sum(layers.values()) + sum(encoders))
    assert second.prefill_s >= sum(layers.values()) and second.ttft_s >= second.shared_s
    assert second.generate_s >= second.ttft_s


def test_alternating_batches_in_one_block(generators):
    generator = generators("qwen2_vl")
    prepared = prepared_batch(generator, "qwen2_vl")
    a, b = prepared[:2], prepared[2:]
    configs = [PruningConfig.none(), PruningConfig("fastv", pruning_rate=0.75)]
    alone = [_essentials(generator.run_prepared(p, c)) for p in (a, b, a) for c in configs]
    with generator.shared(configs):
        got = [_essentials(generator.run_prepared(p, c)) for p in (a, b, a) for c in configs]
    assert got == alone


def test_shared_depth():
    none, k2, k0 = PruningConfig.none(), PruningConfig("fastv", pruning_rate=0.5), PruningConfig("divprune", 0.5)
    assert shared_depth([none, k2, k0], 28) == 2
    assert shared_depth([none], 28) == 0  # a point alone reuses nothing
    assert shared_depth([k2, k2], 28) == 2
    assert shared_depth([none, none], 28) == 28
    assert shared_depth([k0, k2], 28) == 0
