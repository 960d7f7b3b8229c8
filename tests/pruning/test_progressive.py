"""Progressive pruning (several stages), renumbered positions, and VLM-Pruner's open
questions (layer 0, adaptive lambda) on the tiny real models of every family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pruning
from pruning import PruningConfig
from pruning.methods import vlm_pruner
from tests.pruning.conftest import build_inputs, samples
from tests.pruning.test_engine import FAMILIES, _single_and_batched, greedy


def _logits(model, inputs, config=None):
    with torch.no_grad():
        if config is None:
            return model(**inputs).logits[:, -1], None
        with pruning.apply(model, config) as handle:
            return model(**inputs).logits[:, -1], handle.stats


def _record(store: dict):
    """A forward pre-hook keeping the first call's hidden states and rotary tables."""
    def hook(module, args, kwargs):
        store.setdefault("h", kwargs.get("hidden_states", args[0] if args else None))
        store.setdefault("position_embeddings", kwargs.get("position_embeddings"))
    return hook


# -- config -----------------------------------------------------------------------------

def test_stages_as_layers_split_the_rate_geometrically():
    config = PruningConfig.from_dict({"method": "pyramiddrop", "pruning_rate": 0.875})
    assert config.prune_layers == (8, 16, 24)  # the authors' default stages
    assert [config.num_retain_for(576, i) for i in range(3)] == [288, 144, 72]  # lambda = 0.5 each
    pairs = PruningConfig.from_dict({"method": "vlm_pruner", "stages": [[1, 0.5], [3, 0.889]]})
    assert (pairs.layer, pairs.pruning_rate) == (1, 0.889)
    assert [pairs.num_retain_for(576, i) for i in range(2)] == [288, 64]
    for config in (pairs, PruningConfig.from_dict({"method": "vlm_pruner", "num_retain": 10, "stages": [1, 2]})):
        assert PruningConfig.from_dict(config.flat()) == config == PruningConfig.from_dict(config.to_dict())
    # one stage is a single-stage config: same keys as before stages existed
    assert PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.5, "stages": [3]}) == \
        PruningConfig("vlm_pruner", pruning_rate=0.5, layer=3)
    assert "stages" not in PruningConfig("vlm_pruner", pruning_rate=0.5).to_dict()


@pytest.mark.parametrize("values, message", [
    ({"stages": [3, 2]}, r"stages\[1\]: layers must increase"),
    ({"stages": [[1, 0.9], [2, 0.5]]}, r"stages\[1\]: pruning_rate .* cannot fall"),
    ({"stages": [[1, 1.0], [2, 0.5]]}, r"stages\[0\] pruning_rate must be a number in \[0, 1\)"),
    ({"stages": [1, [2, 0.5]]}, "all layers or all"),
    ({"stages": []}, "non-empty list"),
    ({"stages": [0, 2]}, r"stages\[0\] must be a layer \(an integer >= 1 for fastv\)"),
    ({"stages": [1, 2], "layer": 2}, r"layer \(2\) must be unset or the first stage's"),
    ({"positions": "shifted"}, "positions must be one of original, renumbered"),
])
def test_bad_stages_are_refused_naming_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig.from_dict({"method": "fastv", "pruning_rate": 0.5, **values})


def test_grid_methods_cannot_be_progressive_and_stages_must_fit_the_model():
    with pytest.raises(ValueError, match="uniform reads the span's grid as its token order"):
        PruningConfig.from_dict({"method": "uniform", "pruning_rate": 0.5, "stages": [0, 2]})
    with pytest.raises(ValueError, match=r"stages must be in \[1, 3\] .* got 4"):
        PruningConfig.from_dict({"method": "fastv", "pruning_rate": 0.5, "stages": [2, 4]}).validate(num_layers=4)


# -- progressive, on every family -------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["vlm_pruner", "pyramiddrop", "sparsevlm"])
def test_a_stage_that_keeps_everything_changes_nothing(tiny, family, method):
    """[[1, 0], [2, r]] is the single stage at layer 2; [[1, r], [2, r]] the single stage at 1."""
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    for stages, single in (([[1, 0.0], [2, 0.6]], dict(layer=2)), ([[1, 0.6], [2, 0.6]], dict(layer=1))):
        expected, single_stats = _logits(model, inputs, PruningConfig(method, pruning_rate=0.6, **single))
        got, stats = _logits(model, inputs, PruningConfig.from_dict({"method": method, "stages": stages}))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert [[s.keep for s in spans] for spans in stats.samples] == \
            [[s.keep for s in spans] for spans in single_stats.samples]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["vlm_pruner", "pyramiddrop", "sparsevlm"])
def test_progressive_batch_equals_samples_one_by_one(tiny, family, method):
    model, processor = tiny(family)
    config = PruningConfig.from_dict({"method": method, "pruning_rate": 0.8, "stages": [1, 2, 3]})
    names, singles, tokens, kept, before, after = _single_and_batched(model, processor, family, config)
    for b, name in enumerate(names):
        assert kept[b] == singles[name][1], f"{name}: kept indices differ in the batch"
        assert tokens[b].tolist() == singles[name][0].tolist(), f"{name}: greedy tokens differ"
    inputs = build_inputs(processor, family, names)
    _, stats = _logits(model, inputs, config)
    for spans in stats.samples:
        for span in spans:  # each stage keeps its share of the span, the last R
            assert span.stages == [config.num_retain_for(span.before, i) for i in range(3)]
            assert span.after == span.stages[-1] == len(span.keep)
            assert span.stages[0] > span.stages[-1] or span.before < 4


@pytest.mark.parametrize("family", FAMILIES)
def test_progressive_survivors_come_from_the_earlier_stage(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    _, first = _logits(model, inputs, PruningConfig("vlm_pruner", pruning_rate=0.5, layer=1))
    _, both = _logits(model, inputs, PruningConfig.from_dict({"method": "vlm_pruner",
                                                              "stages": [[1, 0.5], [3, 0.8]]}))
    for spans_1, spans_2 in zip(first.samples, both.samples):
        for s1, s2 in zip(spans_1, spans_2):
            assert set(s2.keep) < set(s1.keep) or s1.before < 3


@pytest.mark.parametrize("family", FAMILIES)
def test_progressive_cached_generation_equals_recomputation(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    config = PruningConfig.from_dict({"method": "vlm_pruner", "pruning_rate": 0.8, "stages": [1, 3]})
    with pruning.apply(model, config):
        cached = greedy(model, inputs, new_tokens=5)
        recomputed = greedy(model, inputs, new_tokens=5, use_cache=False)
    assert cached.tolist() == recomputed.tolist()


# -- positions: renumbered --------------------------------------------------------------

def test_renumbered_at_layer_0_is_the_model_run_on_the_shortened_sequence(tiny):
    """DivPrune as its authors run it: the LLM sees only the kept tokens, at fresh position
    ids 0 .. L'-1. LLaVA's rotary ids are the token index, so this is the text model run on
    the gathered embeddings with no pruning at all."""
    model, processor = tiny("llava")
    inputs = build_inputs(processor, "llava", ["image"])
    config = PruningConfig("divprune", pruning_rate=0.75, positions="renumbered")
    entering = {}
    layer0 = model.model.language_model.layers[0]
    hook = layer0.register_forward_pre_hook(_record(entering), with_kwargs=True)
    try:
        got, stats = _logits(model, inputs, config)
    finally:
        hook.remove()
    (span,) = stats.samples[0]
    ids = inputs["input_ids"][0]
    positions = (ids == model.config.image_token_id).nonzero().squeeze(1)
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    keep[positions] = False
    keep[positions[span.keep]] = True
    with torch.no_grad():
        states = model.model.language_model(inputs_embeds=entering["h"][:, keep]).last_hidden_state
        expected = model.lm_head(states)[:, -1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    original, _ = _logits(model, inputs, PruningConfig("divprune", pruning_rate=0.75))
    assert not torch.allclose(original, got)  # the original ids are a different run


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("config", [
    dict(method="divprune", pruning_rate=0.75, positions="renumbered"),
    dict(method="vlm_pruner", pruning_rate=0.75, positions="renumbered"),
    dict(method="vlm_pruner", pruning_rate=0.8, stages=[1, 3], positions="renumbered"),
], ids=["divprune-0", "vlm_pruner-2", "vlm_pruner-1-3"])
def test_renumbered_batch_alone_and_cache(tiny, family, config):
    model, processor = tiny(family)
    config = PruningConfig.from_dict(config)
    names, singles, tokens, kept, _, _ = _single_and_batched(model, processor, family, config)
    for b, name in enumerate(names):
        assert kept[b] == singles[name][1] and tokens[b].tolist() == singles[name][0].tolist(), name
    inputs = build_inputs(processor, family, names)
    with pruning.apply(model, config):
        recomputed = greedy(model, inputs, use_cache=False)
    assert recomputed.tolist() == tokens.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_renumbered_at_rate_zero_is_unpruned(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    expected, _ = _logits(model, inputs)
    got, _ = _logits(model, inputs, PruningConfig("divprune", pruning_rate=0.0, positions="renumbered"))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# -- VLM-Pruner's open questions ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_vlm_pruner_at_layer_0(tiny, family):
    """Pivots from decoder layer 0's own keys: batch = alone, cache = recompute, and the keys
    it reads are layer 0's (the same keys layer 0's attention computes in the forward)."""
    model, processor = tiny(family)
    config = PruningConfig("vlm_pruner", pruning_rate=0.75, layer=0)
    names, singles, tokens, kept, before, after = _single_and_batched(model, processor, family, config)
    for b, name in enumerate(names):
        assert kept[b] == singles[name][1] and tokens[b].tolist() == singles[name][0].tolist(), name
        assert after[b] < before[b] or before[b] == 0
    inputs = build_inputs(processor, family, names)
    with pruning.apply(model, config):
        assert greedy(model, inputs, use_cache=False).tolist() == tokens.tolist()


def test_layer_0_keys_are_layer_0s_own(tiny):
    from pruning.engine import rotary_query_key

    model, processor = tiny("qwen2_vl")
    inputs = build_inputs(processor, "qwen2_vl", ["image"])
    layer0 = model.model.language_model.layers[0]
    seen = {}
    hook = layer0.self_attn.register_forward_pre_hook(_record(seen), with_kwargs=True)
    captured = {}
    original = vlm_pruner.select

    def spy(hidden_states, key_states, grid, num_retain, **kw):
        captured["keys"] = key_states
        return original(hidden_states, key_states, grid, num_retain, **kw)

    spec = pruning.methods.get_method("vlm_pruner")
    object.__setattr__(spec, "select", spy)
    try:
        with torch.no_grad():
            model(**inputs)  # unpruned: what layer 0's attention is given
            _logits(model, inputs, PruningConfig("vlm_pruner", pruning_rate=0.75, layer=0))
    finally:
        object.__setattr__(spec, "select", original)
        hook.remove()
    normed, tables = seen["h"], seen["position_embeddings"]
    _, k = rotary_query_key(layer0.self_attn, normed, tables, queries=False)
    positions = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(1)
    expected = k.transpose(1, 2).reshape(1, k.shape[2], -1)[0, positions]
    torch.testing.assert_close(captured["keys"], expected)


def test_span_redundancy_is_the_mean_pairwise_cosine():
    g = torch.Generator().manual_seed(0)
    unit = F.normalize(torch.randn(40, 16, generator=g) + 1.0, dim=1)
    sim = unit @ unit.T
    expected = (sim.sum() - sim.diagonal().sum()) / (40 * 39)
    assert vlm_pruner.span_redundancy(unit) == pytest.approx(float(expected), rel=1e-5)
    same = F.normalize(torch.ones(5, 3), dim=1)
    assert vlm_pruner.span_redundancy(same) == pytest.approx(1.0)


@pytest.mark.parametrize("path", ["cpu", "torch"])
def test_adaptive_lambda_is_the_fixed_rule_at_the_spans_redundancy(path):
    g = torch.Generator().manual_seed(1)
    h, k = torch.randn(96, 32, generator=g) + 0.5, torch.randn(96, 16, generator=g)
    select = vlm_pruner.select if path == "cpu" else vlm_pruner.select_torch
    rho = vlm_pruner.span_redundancy(vlm_pruner.screened_unit_vectors(h, 256))
    assert 0 < rho < 1
    adaptive = select(h, k, (1, 8, 12), 20, adaptive_lambda=2.0)
    fixed = select(h, k, (1, 8, 12), 20, spatial_lambda=2.0 * rho)
    assert adaptive.keep.tolist() == fixed.keep.tolist()
    torch.testing.assert_close(adaptive.hidden_states, fixed.hidden_states)
    assert select(h, k, (1, 8, 12), 20).keep.tolist() == select(h, k, (1, 8, 12), 20, adaptive_lambda=0.0).keep.tolist()


def test_token_index_places_the_survivors_on_the_grid():
    """A later stage passes the survivors' cells: their grid positions are what the
    distances read (checked against the reference loop given the same cells)."""
    from tests.reference.vlm_pruner_loop import select_loop

    g = torch.Generator().manual_seed(2)
    cells = torch.sort(torch.randperm(144, generator=g)[:60]).values
    h, k = torch.randn(60, 24, generator=g), torch.randn(60, 8, generator=g)
    got = vlm_pruner.select(h, k, (1, 12, 12), 15, token_index=cells)
    keep, fused, _ = select_loop(h, k, (1, 12, 12), 15, positions=cells)
    assert got.keep.tolist() == keep.tolist()
    torch.testing.assert_close(got.hidden_states, fused)
    with pytest.raises(ValueError, match="token_index entries must be cells of grid"):
        vlm_pruner.select(h, k, (1, 5, 5), 15, token_index=cells)
