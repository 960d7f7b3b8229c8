"""PyramidDrop: the worked example, the authors' drop on the same inputs, its signal
against an eager model's attention map, and the staged counts."""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import PruningConfig
from pruning.engine import last_token_attention
from pruning.methods import pyramiddrop
from tests.pruning.conftest import build_inputs
from tests.reference.pyramiddrop_ref import rank_drop


def test_worked_example_and_ties():
    attention = torch.tensor([[.1, .4, .2, .3], [.3, .2, .2, .3]])  # means .2 .3 .2 .3
    assert pyramiddrop.select(attention, 2).keep.tolist() == [1, 3]
    assert pyramiddrop.select(torch.ones(5), 2).keep.tolist() == [0, 1]  # ties: lower index
    assert pyramiddrop.select(attention, 9).keep.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="num_retain"):
        pyramiddrop.select(attention, 0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_same_tokens_as_the_authors_drop(seed, ratio):
    g = torch.Generator().manual_seed(seed)
    heads, s, d, start, n = 4, 40, 8, 5, 24  # N * ratio is whole: their floor = our round
    q, k = torch.randn(1, heads, s, d, generator=g), torch.randn(1, heads, s, d, generator=g)
    theirs = rank_drop(q[0], k[0], start, n, ratio)
    row = last_token_attention(q, k, torch.ones(1, s, dtype=torch.long), d ** -0.5)[0]  # (H, S)
    ours = pyramiddrop.select(row[:, start:start + n], round(n * ratio)).keep
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_layer_attention_is_the_stage_layers_own_attention(tiny_cache, family):
    """The first stage's signal equals the eager attention map of the stage layer itself
    (not the layer before, as FastV reads) in the unpruned forward."""
    from pipeline.models import load_model

    model, processor = load_model(f"tiny:{family}", cache_dir=tiny_cache, attn_implementation="eager")
    inputs = build_inputs(processor, family, ["image"])
    seen = {}
    original = pruning.methods.get_method("pyramiddrop")

    def spy(layer_attention, num_retain):
        seen.setdefault("row", layer_attention)
        return pyramiddrop.select(layer_attention, num_retain)

    object.__setattr__(original, "select", spy)
    try:
        with torch.no_grad():
            eager = model(**inputs, output_attentions=True).attentions
            with pruning.apply(model, PruningConfig.from_dict({"method": "pyramiddrop", "pruning_rate": 0.75,
                                                              "stages": [2, 3]})):
                model(**inputs)
    finally:
        object.__setattr__(original, "select", pyramiddrop.select)
    positions = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(1)
    expected = eager[2][0, :, -1, positions].float()
    torch.testing.assert_close(seen["row"], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(seen["row"], eager[1][0, :, -1, positions].float())
