"""Theoretical prefill FLOPs: hand arithmetic, the real forward passes, and the paper's scale."""

from __future__ import annotations

import doctest

import pytest
import torch
from PIL import Image
from torch.utils import flop_counter
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlavaConfig

import pruning.flops
from pipeline.models import TINY_MODELS, load_model
from pruning.flops import decoder_layer_flops, llm_prefill_flops, prefill_flops, total_flops, vision_flops

# LLaVA-1.5-7B's LLM (Vicuna-7B).
LLAMA_7B = dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("tiny")
    return {spec: load_model(spec, cache_dir=cache_dir) for spec in TINY_MODELS}


def test_hand_computed_tiny_llama():
    """hidden d = 8, 2 heads of 4 with 1 key-value head, MLP 16, vocab 10, 2 layers.

    Layer on n = 3 tokens:
        q, o   2 * (2 * 3 * 8 * 8)  = 768
        k, v   2 * (2 * 3 * 8 * 4)  = 384
        attn   pairs 3 * 4 / 2 = 6;  Q K^T 2 * 6 * 2 * 4 = 96,  A V 96   -> 192
        mlp    3 * (2 * 3 * 8 * 16) = 2304                             -> 3648
    Layer on n = 1 token:  q, o 256; k, v 128; attn 1 pair -> 32; mlp 768 -> 1184
    LM head, last token only: 2 * 8 * 10 = 160
    Layers seeing [3, 1] tokens: 3648 + 1184 + 160 = 4992.
    """
    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
                         vocab_size=10, num_hidden_layers=2)
    assert decoder_layer_flops(config, 3) == 3648
    assert decoder_layer_flops(config, 1) == 1184
    assert llm_prefill_flops(config, [3, 1]) == 4992
    with pytest.raises(ValueError, match=r"one entry per decoder layer \(2\), got 3"):
        llm_prefill_flops(config, [3, 3, 3])


def llava_7b(**overrides) -> LlavaConfig:
    return LlavaConfig(text_config=LlamaConfig(**LLAMA_7B), vision_config=CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14), **overrides)


def test_llava_7b_prefill_is_about_two_flops_per_parameter_per_token():
    """The usual estimate 2 * params * tokens; attention over 636 tokens adds ~1%, and the
    embedding table and LM head (2 x 131M params) are only multiplied once, not per token."""
    text = LlamaConfig(**LLAMA_7B)
    with torch.device("meta"):
        params = sum(p.numel() for p in LlamaForCausalLM(text).parameters())
    assert 6.7e9 < params < 6.8e9
    estimate = 2 * params * 636
    flops = llm_prefill_flops(text, [636] * 32)
    assert abs(flops / estimate - 1) < 0.10


def test_paper_setting_llava_7b():
    """576 visual + 60 text tokens, 88.9% pruned (R = 64) before layer 2."""
    flops = prefill_flops(llava_7b(), seq_len=636, visual_tokens=576, kept_visual_tokens=64, layer=2)
    text = LlamaConfig(**LLAMA_7B)
    expected = 2 * decoder_layer_flops(text, 636) + 30 * decoder_layer_flops(text, 124) + 2 * 4096 * 32000
    assert flops["llm_pruned"] == expected
    assert 4.0 < flops["llm_unpruned"] / flops["llm_pruned"] < 4.2
    assert 0.3e12 < flops["vision"] < 0.5e12  # CLIP ViT-L/14-336 + projector
    assert flops["total_unpruned"] == flops["vision"] + flops["llm_unpruned"]
    assert flops["speedup"] == flops["total_unpruned"] / flops["total_pruned"]
    assert 3.4 < flops["speedup"] < 3.8


def test_monotonic_in_kept_tokens():
    config = llava_7b()
    pruned = [prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=kept, layer=2)
              for kept in (0, 1, 64, 192, 575, 576)]
    llm = [f["llm_pruned"] for f in pruned]
    speedup = [f["speedup"] for f in pruned]
    assert llm == sorted(set(llm)), "more kept tokens must cost strictly more"
    assert speedup == sorted(set(speedup), reverse=True)


def test_earlier_layer_prunes_more():
    config = llava_7b()
    by_layer = [prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=64, layer=k)
                for k in (0, 1, 2, 16, 31)]
    llm = [f["llm_pruned"] for f in by_layer]
    assert llm == sorted(set(llm))
    assert llm[-1] < by_layer[0]["llm_unpruned"]  # even layer 31 saves one layer's worth


def test_keeping_every_token_changes_nothing():
    flops = prefill_flops(llava_7b(), seq_len=636, visual_tokens=576, kept_visual_tokens=576, layer=2)
    assert flops["llm_pruned"] == flops["llm_unpruned"]
    assert flops["speedup"] == 1.0


def test_argument_errors():
    config = llava_7b()
    with pytest.raises(ValueError, match="kept_visual_tokens <= visual_tokens"):
        prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=600, layer=2)
    with pytest.raises(ValueError, match="visual_tokens <= seq_len"):
        prefill_flops(config, seq_len=100, visual_tokens=576, kept_visual_tokens=64, layer=2)
    with pytest.raises(ValueError, match=r"layer must be in \[0, 31\], got 32"):
        prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=64, layer=32)
    with pytest.raises(ValueError, match="unsupported vision tower None"):
        vision_flops(LlamaConfig(**LLAMA_7B), 576)


def test_num_patches_default_and_text_only():
    config = llava_7b()
    inferred = prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=64, layer=2)
    assert inferred["vision"] == vision_flops(config, 576)
    text_only = prefill_flops(LlamaConfig(**LLAMA_7B), seq_len=636, visual_tokens=576, kept_visual_tokens=64,
                              layer=2, num_patches=0)
    assert text_only["vision"] == 0 and text_only["llm_pruned"] == inferred["llm_pruned"]


def test_total_flops_sums_samples():
    config = llava_7b()
    a = prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=64, layer=2)
    b = prefill_flops(config, seq_len=600, visual_tokens=576, kept_visual_tokens=576, layer=2)
    both = total_flops([a, b])
    assert both["llm_pruned"] == a["llm_pruned"] + b["llm_pruned"]
    assert both["total_unpruned"] == a["total_unpruned"] + b["total_unpruned"]
    assert a["speedup"] > both["speedup"] > 1.0


def _image_prompt(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], images=[Image.new("RGB", (224, 224), (120, 30, 200))], return_tensors="pt")


def _cpu_flash_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def FlopCounterMode(**kwargs) -> flop_counter.FlopCounterMode:
    """torch's FLOP counter, also charging SDPA's CPU flash kernel (torch 2.14 runs SDPA on
    the CPU as ``_scaled_dot_product_flash_attention_for_cpu``, which its registry lacks, so
    every attention would count 0) with torch's own SDPA formula."""
    cpu_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return flop_counter.FlopCounterMode(custom_mapping={cpu_flash: _cpu_flash_sdpa}, **kwargs)


def counted(counter: flop_counter.FlopCounterMode) -> int:
    """The counter's total without the rotary tables: some transformers releases build
    cos/sin with a (d/2, 1) x (1, n) product, O(n d) FLOPs that ``pruning.flops`` leaves out."""
    rotary = sum(sum(ops.values()) for module, ops in counter.get_flop_counts().items()
                 if module.rsplit(".", 1)[-1].startswith("rotary"))
    return counter.get_total_flops() - rotary


def _causal_to_full(text_config, n: int) -> float:
    """What a FLOP counter adds to our count: it charges SDPA for all n * n query-key
    pairs of every layer, causal or not, where we count n (n + 1) / 2."""
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return text_config.num_hidden_layers * 4 * (n * n - n * (n + 1) / 2) * text_config.num_attention_heads * head_dim


@pytest.mark.parametrize("spec", TINY_MODELS)
def test_matches_the_real_forward_of_each_tiny_model(tiny_models, spec):
    """Count the matmul/conv/attention FLOPs transformers actually runs for one image and a
    question (LM head on the last position only) with torch's FlopCounterMode; our
    unpruned total must equal it. One 224 px image: Qwen 16 x 16 patches (qwen3_vl:
    14 x 14) in whole Qwen2.5-VL windows; LLaVA 576 patches of its 336 px resize;
    LLaVA-OneVision tiles of (112 / 14)^2 = 64 patches, each tile attended separately."""
    model, processor = tiny_models[spec]
    config = model.config
    inputs = _image_prompt(processor)
    ids = inputs["input_ids"][0]
    image_token = getattr(config, "image_token_id", None) or config.image_token_index
    visual = int((ids == image_token).sum())
    num_images = 1
    if "image_grid_thw" in inputs:
        num_patches = int(inputs["image_grid_thw"].prod(-1).sum())
    elif spec == "tiny:llava_onevision":
        num_images = inputs["pixel_values"].shape[1]  # tiles
        num_patches = num_images * (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    else:
        num_patches = visual
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs, logits_to_keep=1)
    ours = prefill_flops(config, seq_len=ids.numel(), visual_tokens=visual, kept_visual_tokens=visual, layer=0,
                         num_patches=num_patches, num_images=num_images)
    assert ours["total_unpruned"] + _causal_to_full(config.get_text_config(), ids.numel()) == \
        counted(counter)


@pytest.mark.parametrize("spec", TINY_MODELS)
def test_pruned_llm_matches_shorter_real_forward(tiny_models, spec):
    """The LLM alone on n tokens: what layers >= K see after pruning is a shorter sequence."""
    model, _ = tiny_models[spec]
    text = model.config.get_text_config()
    for n in (37, 5):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            hidden = model.model.language_model(input_ids=torch.arange(n)[None]).last_hidden_state
            model.lm_head(hidden[:, -1:])
        ours = llm_prefill_flops(model.config, [n] * text.num_hidden_layers)
        assert ours + _causal_to_full(text, n) == counted(counter)


def test_module_examples():
    assert doctest.testmod(pruning.flops).failed == 0


def test_progressive_stages_count_each_stages_sequence():
    """Layers 0-7 see 636 tokens, 8-15 348 (288 visual), 16-23 204, 24-31 132 (PyramidDrop's
    576 -> 288 -> 144 -> 72 on LLaVA-1.5-7B)."""
    from transformers import LlavaConfig

    from pruning.flops import llm_prefill_flops

    config = LlavaConfig()
    f = prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=72, layer=8,
                      stages=[(8, 288), (16, 144), (24, 72)])
    expected = llm_prefill_flops(config, [636] * 8 + [348] * 8 + [204] * 8 + [132] * 8)
    assert f["llm_pruned"] == pytest.approx(expected)
    single = prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=72, layer=8)
    assert f["llm_pruned"] > single["llm_pruned"]
    with pytest.raises(ValueError, match="stages must start at layer 8"):
        prefill_flops(config, seq_len=636, visual_tokens=576, kept_visual_tokens=72, layer=8,
                      stages=[(8, 288), (6, 72)])
