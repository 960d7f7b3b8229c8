"""VisionZip: worked examples, properties, the authors' computation (tests/reference), and
pruning.apply on tiny real models of every family."""

from __future__ import annotations

import math

import pytest
import torch

import pruning
from pruning import PruningConfig
from pruning.methods import get_method
from pruning.methods.visionzip import select
from tests.pruning.conftest import build_inputs, samples
from tests.pruning.test_engine import FAMILIES
from tests.reference.visionzip_ref import visionzip_ref


def _inputs(n, heads=1, d=4, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    attention = torch.rand(heads, n, generator=g).softmax(dim=1)  # (heads, N)
    keys = torch.randn(heads, n, d, generator=g)  # (heads, N, d)
    hidden = torch.randn(n, dim, generator=g)  # (N, D)
    return attention, keys, hidden


def _concat(keys):
    return keys.transpose(0, 1).flatten(1)  # (N, heads * d): the vision_keys signal


# Hand-worked cases ----------------------------------------------------------------------


def test_docstring_example():
    """N = 6, R = 3, ratio 1/3 -> C = 1, D = 2. Dominant: the two most attended, 1 (.5)
    and 3 (.4). Rest [0, 2, 4, 5], step 4 // 1 = 4, target 0; 2, 4, 5 join it:
    keep [0, 1, 3], state 0 = h0 + (h2 + h4 + h5) / 3, states 1 and 3 unchanged."""
    attention = torch.tensor([.1, .5, .2, .4, .0, .3])
    hidden = torch.arange(12.0).view(6, 2)
    sel = select(attention, torch.randn(6, 3), hidden, 3, contextual_ratio=1 / 3)
    assert sel.keep.tolist() == [0, 1, 3]
    torch.testing.assert_close(sel.hidden_states, torch.stack([
        hidden[0] + (hidden[2] + hidden[4] + hidden[5]) / 3, hidden[1], hidden[3]]))


def test_two_targets_take_their_most_similar_tokens():
    """N = 8, R = 4, ratio .5 -> C = 2, D = 2: tokens 6, 7 dominant. Rest [0..5], step
    6 // 2 = 3, targets 0 and 3. Keys: 1, 2, 5 point like 0 (x axis), 4 like 3 (y axis):
    state 0 = h0 + (h1 + h2 + h5) / 3, state 3 = h3 + h4 -> keep [0, 3, 6, 7]."""
    attention = torch.tensor([.0, .1, .1, .0, .1, .1, .9, .8])
    x, y = [1.0, 0.1], [0.1, 1.0]
    keys = torch.tensor([x, x, [2.0, 0.3], y, [0.2, 3.0], x, y, x])
    hidden = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    sel = select(attention, keys, hidden, 4, contextual_ratio=0.5)
    assert sel.keep.tolist() == [0, 3, 6, 7]
    torch.testing.assert_close(sel.hidden_states, torch.stack([
        hidden[0] + (hidden[1] + hidden[2] + hidden[5]) / 3, hidden[3] + hidden[4], hidden[6], hidden[7]]))


def test_ties_go_to_the_lower_index():
    """Equal attention: the dominant tokens are the lowest indices (0, 1 of D = 2); rest
    [2..5], C = 2, step 2, targets 2 and 4. Identical keys: every member ties between
    both targets and joins the lower one, 2: state 2 = h2 + (h3 + h5) / 2, 4 unchanged."""
    hidden = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    sel = select(torch.full((6,), 0.5), torch.ones(6, 4), hidden, 4, contextual_ratio=0.5)
    assert sel.keep.tolist() == [0, 1, 2, 4]
    torch.testing.assert_close(sel.hidden_states[2], hidden[2] + (hidden[3] + hidden[5]) / 2)
    torch.testing.assert_close(sel.hidden_states[3], hidden[4])


# Properties -----------------------------------------------------------------------------


def test_keeping_every_token_changes_nothing():
    attention, keys, hidden = _inputs(10)
    for r in (10, 11, 500):
        sel = select(attention[0], _concat(keys), hidden, r)
        assert sel.keep.tolist() == list(range(10)) and sel.hidden_states is None


def test_exactly_r_kept_sorted_int64_and_deterministic():
    attention, keys, hidden = _inputs(50, heads=2)
    for ratio in (0.0, 10 / 64, 0.5, 1.0):
        for r in range(1, 50):
            sel = select(attention.mean(0), _concat(keys), hidden, r, contextual_ratio=ratio)
            again = select(attention.mean(0), _concat(keys), hidden, r, contextual_ratio=ratio)
            assert sel.keep.numel() == r and sel.keep.dtype == torch.int64
            assert torch.equal(sel.keep, torch.sort(sel.keep).values) and sel.keep.unique().numel() == r
            assert torch.equal(sel.keep, again.keep)
            contextual = math.floor(r * ratio + 0.5)
            if contextual:
                assert sel.hidden_states.shape == (r, 6) and torch.equal(sel.hidden_states, again.hidden_states)
            else:
                assert sel.hidden_states is None


def test_the_default_split_is_the_authors_54_plus_10():
    """R = 64 of 576: the 54 most attended tokens and 10 contextual ones."""
    attention, keys, hidden = _inputs(576, heads=2, seed=3)
    sel = select(attention.mean(0), _concat(keys), hidden, 64)
    top54 = set(torch.sort(attention.mean(0), descending=True).indices[:54].tolist())
    assert top54 <= set(sel.keep.tolist()) and sel.keep.numel() == 64
    assert get_method("visionzip").default_layer == 0


@pytest.mark.parametrize("kwargs,name", [
    ({"num_retain": 0}, "num_retain"),
    ({"contextual_ratio": 1.5}, "contextual_ratio"),
    ({"vision_attention": torch.rand(2, 8)}, "vision_attention"),
    ({"vision_attention": torch.tensor([float("nan")] * 8)}, "vision_attention"),
    ({"vision_keys": torch.rand(7, 4)}, "vision_keys"),
    ({"hidden_states": torch.rand(8)}, "hidden_states"),
    ({"hidden_states": torch.rand(8, 3).long()}, "hidden_states"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    args = {"vision_attention": torch.rand(8), "vision_keys": torch.rand(8, 4),
            "hidden_states": torch.rand(8, 3), "num_retain": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        select(**args)


# Against the authors' computation ----------------------------------------------------------


def _split(r, ratio=10 / 64):
    contextual = math.floor(r * ratio + 0.5)
    return r - contextual, contextual


@pytest.mark.parametrize("seed", range(6))
def test_one_head_equals_the_authors_code(seed):
    """With one head their head-averaged keys are our keys: same tokens, same states."""
    n = [576, 100, 37, 64, 200, 24][seed]
    attention, keys, hidden = _inputs(n, seed=seed)
    for r in sorted(r for r in {1 + seed, 16, 64, n // 2, n - 1} if r < n):
        dominant, contextual = _split(r)
        if contextual == 0:
            continue  # their code divides by C
        sel = select(attention.mean(0), _concat(keys), hidden, r)
        keep, states = visionzip_ref(attention, keys, hidden, dominant, contextual)
        assert torch.equal(sel.keep, keep), (n, r)
        torch.testing.assert_close(sel.hidden_states, states)


@pytest.mark.parametrize("seed", range(4))
def test_several_heads_differ_only_in_the_key_pooling(seed):
    """Their metric averages the keys over heads, ours concatenates them: the kept tokens
    (dominant by attention, targets by index) are the same, the dominant states are equal,
    and only the merged states may differ; given their head-averaged keys we agree fully."""
    attention, keys, hidden = _inputs(144, heads=4, seed=10 + seed)
    for r in (16, 36, 72):
        dominant, contextual = _split(r)
        ours = select(attention.mean(0), _concat(keys), hidden, r)
        keep, states = visionzip_ref(attention, keys, hidden, dominant, contextual)
        assert torch.equal(ours.keep, keep)
        merged = ~torch.isin(ours.keep, torch.sort(attention.sum(0), descending=True).indices[:dominant])
        torch.testing.assert_close(ours.hidden_states[~merged], states[~merged])
        averaged = select(attention.mean(0), keys.mean(0), hidden, r)
        torch.testing.assert_close(averaged.hidden_states, states)


def test_no_contextual_tokens_where_the_authors_divide_by_zero():
    attention, keys, hidden = _inputs(30)
    with pytest.raises(ZeroDivisionError):
        visionzip_ref(attention, keys, hidden, 3, 0)
    sel = select(attention[0], _concat(keys), hidden, 3)  # round(3 * 10/64) = 0 contextual
    assert sel.keep.tolist() == sorted(torch.sort(attention[0], descending=True).indices[:3].tolist())


# On tiny real models (rate 0 = unpruned, batch = alone and cache = recompute: test_engine) ------


@pytest.mark.parametrize("family", FAMILIES)
def test_every_span_keeps_exactly_r(tiny, family):
    model, processor = tiny(family)
    with torch.no_grad(), pruning.apply(model, PruningConfig(method="visionzip", pruning_rate=0.75)) as handle:
        model(**build_inputs(processor, family, list(samples(family))))
    spans = [s for sample in handle.stats.samples for s in sample]
    assert spans and all(s.after == round(s.before * 0.25) == len(s.keep) for s in spans)


def test_vision_signals_are_captured_only_for_a_method_that_reads_them(tiny):
    model, processor = tiny("qwen2_vl")
    inputs = build_inputs(processor, "qwen2_vl", ["image"])
    with pruning.apply(model, PruningConfig(method="divprune", pruning_rate=0.5)) as handle:
        assert handle._vision is None
        handle.config = PruningConfig(method="visionzip", pruning_rate=0.5)
        with torch.no_grad(), pytest.raises(ValueError, match="vision signals are captured only"):
            model(**inputs)
