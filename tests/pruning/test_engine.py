"""pruning.apply on real tiny models of every family: identity at rate 0, batches equal
single samples, cached decoding equals recomputation, text untouched, bad configs refused."""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import PruningConfig
from pruning.methods import get_method, list_methods
from tests.pruning.conftest import VIDEO_FAMILIES, build_inputs, samples

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "llava_onevision"]
# Every registered method: one added in a file is tested here with no edit.
METHODS = list_methods()
# Signals that read the text after a span: the selection may change as generated text
# grows (FastV's query token moves; DART's text pivots are among the tokens after the span).
TEXT_SIGNALS = {"attention", "layer_attention", "text_attention", "text_key_states",
                "text_normed_hidden_states", "text_hidden_states"}
CACHE_STABLE = [m for m in METHODS if not TEXT_SIGNALS & set(get_method(m).signals)]


def method_config(method: str, **values) -> PruningConfig:
    """``method`` at its defaults, a progressive method's stages fitted to the tiny
    models' four decoder layers."""
    if get_method(method).default_stages and "layer" not in values:
        values["stages"] = [1, 2, 3]
    return PruningConfig.from_dict({"method": method, **values})


def greedy(model, inputs, new_tokens=4, **kwargs):
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, **kwargs)
    return out[:, inputs["input_ids"].shape[1]:]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_rate_zero_gives_unpruned_logits(tiny, family, method):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    with torch.no_grad():
        expected = model(**inputs).logits
        with pruning.apply(model, method_config(method, pruning_rate=0.0)) as handle:
            got = model(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    before, after = handle.stats.visual_tokens()
    assert before == after and sum(before) > 0


def _single_and_batched(model, processor, family, config):
    names = list(samples(family))
    singles = {}
    for name in names:
        inputs = build_inputs(processor, family, [name])
        with pruning.apply(model, config) as handle:
            tokens = greedy(model, inputs)
            singles[name] = (tokens[0], [s.keep for s in handle.stats.samples[0]])
    batch = build_inputs(processor, family, names)
    with pruning.apply(model, config) as handle:
        tokens = greedy(model, batch)
        kept = [[s.keep for s in spans] for spans in handle.stats.samples]
        before, after = handle.stats.visual_tokens()
    return names, singles, tokens, kept, before, after


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_samples_one_by_one(tiny, family, method):
    model, processor = tiny(family)
    config = method_config(method, pruning_rate=0.75)
    names, singles, tokens, kept, before, after = _single_and_batched(model, processor, family, config)
    for b, name in enumerate(names):
        assert kept[b] == singles[name][1], f"{name}: kept indices differ in the batch"
        assert tokens[b].tolist() == singles[name][0].tolist(), f"{name}: greedy tokens differ"
    for b, name in enumerate(names):
        if name == "text":
            assert before[b] == after[b] == 0
        else:
            assert 0 < after[b] < before[b]


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_at_the_papers_rate_equals_each_sample_alone(tiny, family):
    """The check a fresh install must pass (transformers 5.24 broke it silently): under
    VLM-Pruner at 88.9%, a left-padded batch of images of different sizes (and a video) plus
    a text-only sample generates what each sample generates alone, the cached generation
    equals recomputation, and the stats of the prefill survive ``generate``."""
    model, processor = tiny(family)
    config = PruningConfig(method="vlm_pruner", pruning_rate=0.889)
    names, singles, tokens, kept, before, after = _single_and_batched(model, processor, family, config)
    for b, name in enumerate(names):
        assert kept[b] == singles[name][1], f"{name}: kept indices differ in the batch"
        assert tokens[b].tolist() == singles[name][0].tolist(), f"{name}: greedy tokens differ"
    with pruning.apply(model, config) as handle:
        batch = build_inputs(processor, family, names)
        recomputed = greedy(model, batch, use_cache=False)
        spans = handle.stats.samples
    assert recomputed.tolist() == tokens.tolist()
    for b, name in enumerate(names):
        expected = sum(round(s.before * (1 - 0.889)) for s in spans[b])
        assert after[b] == expected and (before[b] > after[b] if name != "text" else before[b] == 0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", CACHE_STABLE)
def test_cached_generation_equals_recomputation(tiny, family, method):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    with pruning.apply(model, method_config(method, pruning_rate=0.8)):
        cached = greedy(model, inputs, new_tokens=5)
        recomputed = greedy(model, inputs, new_tokens=5, use_cache=False)
    assert cached.tolist() == recomputed.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_samples_are_untouched(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, ["text"])
    with torch.no_grad():
        expected = model(**inputs).logits
        with pruning.apply(model, PruningConfig(method="vlm_pruner", pruning_rate=0.9)) as handle:
            got = model(**inputs).logits
    assert torch.equal(got, expected)
    assert handle.stats.visual_tokens() == ([0], [0])  # no visual span: nothing to prune


@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_shortens_the_sequence_and_keeps_counts(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, ["image"])
    n = int((inputs["input_ids"] == model.config.image_token_id).sum())
    with torch.no_grad(), pruning.apply(model, PruningConfig(method="vlm_pruner",
                                                            pruning_rate=0.889)) as handle:
        logits = model(**inputs).logits
    spans = handle.stats.samples[0]
    (before,), (after,) = handle.stats.visual_tokens()
    assert after == sum(round(s.before * (1 - 0.889)) for s in spans) == sum(s.after for s in spans)
    # OneVision's row newlines are placeholders too, but separators: never pruned.
    assert before == n - (16 if family == "llava_onevision" else 0)
    assert logits.shape[1] == inputs["input_ids"].shape[1] - (before - after)
    assert handle.stats.select_seconds > 0


def test_video_span_is_pruned_on_its_own(tiny):
    model, processor = tiny("qwen2_vl")
    inputs = build_inputs(processor, "qwen2_vl", ["video"])
    with torch.no_grad(), pruning.apply(model, PruningConfig(method="uniform", pruning_rate=0.5)) as h:
        model(**inputs)
    (span,) = h.stats.samples[0]
    assert span.kind == "video" and span.grid[0] == 2 and span.after == span.before // 2


@pytest.mark.parametrize("bad,field", [
    ({"method": "nope", "pruning_rate": 0.5}, "method"),
    ({"method": "vlm_pruner", "pruning_rate": 1.0}, "pruning_rate"),
    ({"method": "vlm_pruner", "pruning_rate": 0.5, "layer": -1}, "layer"),
    ({"method": "fastv", "pruning_rate": 0.5, "layer": 0}, "layer"),
    ({"method": "vlm_pruner", "pruning_rate": 0.5, "params": {"token_batch": 0}}, "token_batch"),
])
def test_invalid_configs_are_refused_before_work(bad, field):
    with pytest.raises(ValueError, match=field):
        PruningConfig.from_dict(bad)


@pytest.mark.parametrize("layer", [4, 9])  # one past the last decoder layer, and far past it
def test_layer_outside_the_model_is_refused_before_work(tiny, layer):
    model, processor = tiny("qwen2_vl")
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="layer must be in"):
            pruning.apply(model, PruningConfig(method="vlm_pruner", pruning_rate=0.5, layer=layer))
    finally:
        hook.remove()
    assert not calls
    # and no hook was left behind
    inputs = build_inputs(processor, "qwen2_vl", ["image"])
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("family", [f for f in FAMILIES if f in VIDEO_FAMILIES])
def test_mixed_batch_with_video_vlm_pruner(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, ["video", "text", "image"])
    with torch.no_grad(), pruning.apply(model, PruningConfig(method="vlm_pruner",
                                                            pruning_rate=0.5)) as handle:
        model(**inputs)
    kinds = [sorted({s.kind for s in spans}) for spans in handle.stats.samples]
    assert kinds == [["video"], [], ["image"]]  # OneVision: an image is two spans (base, tiles)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava"])
def test_fastv_attention_row_matches_eager_attention(tiny_cache, family):
    """The last token's layer-1 attention, recomputed from q/k projections + RoPE under
    SDPA, equals the attention map an eager model reports."""
    from pipeline.models import load_model
    from pruning.engine import last_token_attention, rotary_query_key

    model, processor = load_model(f"tiny:{family}", cache_dir=tiny_cache, attn_implementation="eager")
    inputs = build_inputs(processor, family, ["image", "text"])
    layer = model.model.language_model.layers[1].self_attn
    seen = {}
    hook = layer.register_forward_pre_hook(
        lambda m, a, kw: seen.update(x=kw["hidden_states"], pe=kw["position_embeddings"]), with_kwargs=True)
    try:
        with torch.no_grad():
            out = model(**inputs, output_attentions=True)
            q, k = rotary_query_key(layer, seen["x"], seen["pe"])
            ours = last_token_attention(q, k, inputs["attention_mask"], layer.scaling)
    finally:
        hook.remove()
    torch.testing.assert_close(ours, out.attentions[1][:, :, -1].float(), rtol=1e-4, atol=1e-5)
