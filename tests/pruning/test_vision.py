"""pruning.vision on tiny real models: the captured vision attention and keys equal what
the model's own eager attention computes in the same layer, and they are mapped to the
LLM's tokens in the order the model's merger emits them."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from transformers import AttentionInterface

from pipeline.models import load_model
from pruning import vision
from pruning.models import family_for
from tests.pruning.conftest import build_inputs, samples

QWEN = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]

RECORDED: list[dict] = []


def _record_eager(module, query, key, value, attention_mask, **kwargs):
    """The module's own eager attention, with its weights and keys recorded."""
    out, weights = inspect.getmodule(type(module)).eager_attention_forward(
        module, query, key, value, attention_mask, **kwargs)
    RECORDED.append({"weights": weights.float(), "keys": key.float()})
    return out, weights


AttentionInterface.register("test_record_eager", _record_eager)


def _chosen_attention(model, family_name):
    if family_name in ("llava", "llava_onevision"):
        tower = model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        return layers[vision.feature_block(model.config.vision_feature_layer, len(layers))].self_attn
    visual = model.model.visual
    return visual.blocks[family_for(model).vision_block(model.config.vision_config)].attn


def _run(tiny_cache, family_name):
    """Load a fresh model whose chosen vision attention records eager weights; run a batch."""
    model, processor = load_model(f"tiny:{family_name}", cache_dir=tiny_cache)
    attn = _chosen_attention(model, family_name)
    attn.config = copy.copy(attn.config)
    attn.config._attn_implementation = "test_record_eager"
    names = [n for n in samples(family_name) if n != "text"]
    inputs = build_inputs(processor, family_name, names)
    capture = vision.VisionCapture(model, family_for(model))
    outputs = []
    encoder = model.model.visual if family_name in QWEN else model.model.vision_tower
    hooks = capture.hooks + [encoder.register_forward_hook(lambda m, a, kw, out: outputs.append(out),
                                                           with_kwargs=True)]
    RECORDED.clear()
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return model, inputs, capture, outputs


def test_llava_cls_row_equals_eager_attention(tiny_cache):
    model, inputs, capture, _ = _run(tiny_cache, "llava")
    items = capture._items
    (rec,) = RECORDED
    expected = rec["weights"][:, :, 0, 1:].mean(dim=1)  # (images, P): the CLS query, heads averaged
    b, h, t, d = rec["keys"].shape
    keys = rec["keys"].transpose(1, 2).reshape(b, t, h * d)[:, 1:]
    assert len(items) == b == inputs["pixel_values"].shape[0]
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    for i, item in enumerate(items):
        assert item.grid == (1, side, side)
        torch.testing.assert_close(item.attention, expected[i], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(item.keys, keys[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family_name", QWEN)
def test_qwen_received_attention_equals_eager_and_follows_the_merger(tiny_cache, family_name):
    model, inputs, capture, outputs = _run(tiny_cache, family_name)
    items = capture._items
    family, merge = family_for(model), model.config.vision_config.spatial_merge_size
    grids = [g for key in ("image_grid_thw", "video_grid_thw") if key in inputs for g in [inputs[key]]]
    assert len(outputs) == len(grids) == 2  # images, then the video
    # Eager weights come one segment (frame) at a time, in the encoder's calls' order.
    per_patch = [rec["weights"][0].mean(dim=(0, 1)) for rec in RECORDED]
    keys = [rec["keys"][0].transpose(0, 1).flatten(1) for rec in RECORDED]
    expected, start = [], 0
    for grid_thw, out in zip(grids, outputs):
        frames = int(grid_thw[:, 0].sum())
        attention = torch.cat(per_patch[start:start + frames])
        key = torch.cat(keys[start:start + frames])
        start += frames
        order = family.vision_token_order(model.model.visual, grid_thw)
        expected += vision.merged_items(attention, key, grid_thw, merge, order)
        # The mapping to LLM tokens is the merger's own: the blocks' output mapped the same
        # way and merged gives the model's merged features (raster order).
        mapped = torch.cat([it.keys for it in vision.merged_items(
            out.last_hidden_state.sum(1), out.last_hidden_state, grid_thw, merge, order)])
        merged = model.model.visual.merger(mapped.reshape(-1, out.last_hidden_state.shape[1]))
        pooled = out.pooler_output  # get_*_features may have split it per image since
        pooled = torch.cat(pooled) if isinstance(pooled, (tuple, list)) else pooled
        torch.testing.assert_close(merged, pooled, rtol=1e-5, atol=1e-6)
    assert len(items) == len(expected) == sum(g.shape[0] for g in grids)
    for got, want in zip(items, expected):
        assert got.grid == want.grid
        torch.testing.assert_close(got.attention, want.attention, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got.keys, want.keys, rtol=1e-5, atol=1e-6)
    for item in items:  # each frame's attention sums to one over its patches
        frames = item.grid[0]
        torch.testing.assert_close(item.attention.view(frames, -1).sum(1), torch.ones(frames))


def test_feature_block_maps_hidden_state_indices_to_blocks():
    assert vision.feature_block(-2, 24) == 22 and vision.feature_block(-1, 24) == 23
    assert vision.feature_block(1, 24) == 0
    for bad in (0, -25, 25, [-2, -1]):
        with pytest.raises(ValueError, match="vision_feature_layer"):
            vision.feature_block(bad, 24)


def test_onevision_received_attention_equals_eager_through_the_models_layout(tiny_cache):
    """SigLIP: the mean attention each patch receives in its crop, from eager weights, laid
    out as the model lays out its features (pack_image_features without newlines, then
    apply_pooling for the video's frames); the base tile is crop 0 unchanged."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    model, inputs, capture, _ = _run(tiny_cache, "llava_onevision")
    items = capture._items
    config, base = model.config, model.model
    images, video = RECORDED  # one encoder call for the images' crops, one for the video's frames
    signals = [torch.cat([rec["weights"].mean(dim=(1, 2))[..., None],
                          rec["keys"].transpose(1, 2).flatten(2)], dim=-1) for rec in (images, video)]
    sizes = inputs["image_sizes"]
    crops = [image_size_to_num_patches(s, config.image_grid_pinpoints, config.vision_config.image_size)
             for s in sizes]
    packed, _ = base.pack_image_features(torch.split(signals[0], crops), sizes,
                                         vision_aspect_ratio=config.vision_aspect_ratio)
    side = config.vision_config.image_size // config.vision_config.patch_size
    expected = []
    for tokens in packed:
        expected += [tokens[:side * side], tokens[side * side:]]
    expected += list(base.apply_pooling(signals[1]))  # one item per frame
    assert len(items) == len(expected) == 2 * len(crops) + inputs["pixel_values_videos"].shape[1]
    torch.testing.assert_close(items[0].attention, signals[0][0, :, 0], rtol=1e-5, atol=1e-7)
    for got, want in zip(items, expected):
        torch.testing.assert_close(got.attention, want[:, 0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got.keys, want[:, 1:], rtol=1e-5, atol=1e-6)
    spans = family_for(model).spans(model, inputs["input_ids"], dict(inputs))
    video_span = next(s for sample in spans for s in sample if s.kind == "video")
    frames = video_span.grid[0]
    got = capture.item(spans, video_span)  # a video takes its T frames, in order
    torch.testing.assert_close(got.attention, torch.cat([it.attention for it in items[-frames:]]))
