"""pruning.apply refuses a model whose transformers seams have changed, before any forward,
with a message naming the seam, the installed transformers and the tested range."""

from __future__ import annotations

import inspect
import re
import tomllib
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from packaging.requirements import Requirement

import pruning
from pruning import PruningConfig, seams
from tests.pruning.conftest import build_inputs

CONFIG = PruningConfig(method="vlm_pruner", pruning_rate=0.889)


@pytest.fixture
def model(tiny):
    """The tiny Qwen2-VL with a counter of model forwards (none may run on a refusal)."""
    model, _ = tiny("qwen2_vl")
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    model.forward_calls = calls
    yield model
    hook.remove()
    del model.forward_calls


def refused(model, config=CONFIG, match=""):
    with pytest.raises(seams.SeamError, match=match) as info:
        pruning.apply(model, config)
    message = str(info.value)
    assert f"transformers {seams.transformers.__version__}" in message
    assert str(seams.TESTED_TRANSFORMERS) in message
    assert not model.forward_calls
    return message


def test_renamed_decoder_layer_argument_is_refused(model, monkeypatch):
    layer = model.model.language_model.layers[3]
    original = layer.forward

    def forward(hidden_states, attention_mask=None, rotary=None, **kwargs):  # position_embeddings renamed
        return original(hidden_states, attention_mask=attention_mask, position_embeddings=rotary, **kwargs)

    monkeypatch.setattr(layer, "forward", forward)
    message = refused(model, match="position_embeddings")
    assert "decoder layer 3" in message


def test_model_forward_without_a_cache_argument_is_refused(model, monkeypatch):
    original = model.forward

    def forward(input_ids=None, attention_mask=None, image_grid_thw=None, video_grid_thw=None,
                **kwargs):
        return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    refused(model, match="cache / past_key_values")


def test_model_forward_without_the_family_grid_input_is_refused(model, monkeypatch):
    def forward(input_ids=None, attention_mask=None, cache=None, video_grid_thw=None, **kwargs):
        raise AssertionError("never called")

    monkeypatch.setattr(model, "forward", forward)
    refused(model, match="image_grid_thw")


def test_attention_without_projections_is_refused(model, monkeypatch):
    attn = model.model.language_model.layers[1].self_attn
    monkeypatch.delattr(attn, "scaling")
    refused(model, match="attention of layer 1 .* scaling")


def test_changed_create_causal_mask_is_refused(model, monkeypatch):
    def create_causal_mask(config, inputs_embeds, attention_mask, cache, position_ids=None):
        raise AssertionError("never called")

    monkeypatch.setattr(seams, "create_causal_mask", create_causal_mask)
    refused(model, match="create_causal_mask takes no layer_idx")


def test_sliding_window_layers_are_refused(model, monkeypatch):
    text_config = model.model.language_model.config
    kinds = ["full_attention", "sliding_attention"] * (text_config.num_hidden_layers // 2)
    monkeypatch.setattr(text_config, "layer_types", kinds)
    refused(model, match="full attention")


def test_static_cache_in_the_generation_config_is_refused(model, monkeypatch):
    monkeypatch.setattr(model.generation_config, "cache_implementation", "static")
    refused(model, match="dynamic KV cache")


def test_a_static_cache_given_to_generate_is_refused(tiny):
    model, processor = tiny("qwen2_vl")
    inputs = build_inputs(processor, "qwen2_vl", ["image"])
    with pruning.apply(model, CONFIG), pytest.raises(seams.SeamError, match="DynamicCache"):
        model.generate(**inputs, max_new_tokens=2, do_sample=False, cache_implementation="static")


def test_rotary_tables_of_another_layout_are_refused():
    """Before transformers 5.17 Qwen's layers got (3, B, S, d) tables (M-RoPE sections
    split inside the attention); the engine gathers and applies (B, S, d) ones."""
    good = (torch.zeros(1, 5, 8), torch.zeros(1, 5, 8))
    assert seams.rotary_tables({"position_embeddings": good}, 5, "layer 1") is good
    with pytest.raises(seams.SeamError, match=r"layer 1 must be given position_embeddings.*\(3, 1, 5, 8\)"):
        seams.rotary_tables({"position_embeddings": (torch.zeros(3, 1, 5, 8),) * 2}, 5, "layer 1")
    with pytest.raises(seams.SeamError, match="NoneType"):
        seams.rotary_tables({}, 5, "layer 1")


def test_an_untested_transformers_release_warns_once(model, monkeypatch):
    # transformers 5.24 can swap sys.modules["transformers"] for a second module object
    # (transformers.utils.auto_docstring importing transformers.models): patch the one seams reads.
    monkeypatch.setattr(seams.transformers, "__version__", "99.0.0")
    with pytest.warns(UserWarning, match=r"transformers 99\.0\.0 is outside the range"):
        pruning.apply(model, CONFIG).remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruning.apply(model, CONFIG).remove()  # once per process


def test_the_tested_release_does_not_warn(model):
    assert seams.transformers.__version__ in seams.TESTED_TRANSFORMERS, "the suite runs outside the tested range"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruning.apply(model, CONFIG).remove()


def test_pyproject_states_the_tested_range():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    (requirement,) = [Requirement(r) for r in project["dependencies"]
                      if re.match(r"transformers\b", r)]
    assert requirement.specifier == seams.TESTED_TRANSFORMERS


def test_a_manual_decode_step_continues_the_pruned_prefill(tiny):
    """Prefill and one decode step called by hand (the cache under the forward's own
    keyword; LLaVA, whose decode positions need no rope deltas): the step is recognised as continuing the pruned prefill (the stats stay,
    nothing is pruned again) and gives the tokens generate gives."""
    model, processor = tiny("llava")
    inputs = build_inputs(processor, "llava", ["image"])
    name = next(n for n in ("cache", "past_key_values") if n in inspect.signature(model.forward).parameters)
    cache = transformers.DynamicCache(config=model.config)
    with torch.no_grad(), pruning.apply(model, CONFIG) as handle:
        first = model(**inputs, **{name: cache}, use_cache=True).logits[:, -1]
        stats = handle.stats
        token = first.argmax(-1, keepdim=True)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(token)], dim=1)
        second = model(input_ids=token, attention_mask=mask, **{name: cache}, use_cache=True).logits[:, -1]
        assert handle.stats is stats
        (before,), (after,) = stats.visual_tokens()
        assert before > 0 and after == round(before * (1 - 0.889))
        generated = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert generated[0, -2:].tolist() == [int(token), int(second.argmax(-1))]
