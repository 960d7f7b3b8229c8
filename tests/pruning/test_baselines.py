"""The baselines (FastV, DART, DivPrune, random, uniform) and the method registry."""

from __future__ import annotations

import pytest
import torch

from pruning.methods import Selection, dart, divprune, fastv, get_method, list_methods
from pruning.methods import random as random_method
from pruning.methods import register, uniform


def test_registry_lists_every_method_and_refuses_duplicates():
    assert {"cdpruner", "dart", "divprune", "dycoke", "fastv", "pyramiddrop", "random", "sparsevlm", "uniform",
            "visionzip", "vlm_pruner"} <= \
        set(list_methods())
    assert list_methods() == sorted(list_methods())
    assert get_method("vlm_pruner").default_layer == 2
    assert get_method("divprune").default_layer == 0
    with pytest.raises(ValueError, match="already registered"):
        register("fastv", signals=(), default_layer=2)(lambda: None)
    with pytest.raises(ValueError, match="unknown pruning method 'nope'.*vlm_pruner"):
        get_method("nope")


# FastV --------------------------------------------------------------------------------


def test_fastv_keeps_most_attended_heads_averaged():
    """Head 0 favours token 1, head 1 favours token 3; the average is
    [.15, .35, .2, .3] -> keep 1 and 3."""
    attention = torch.tensor([[0.1, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.4]])
    assert fastv.select(attention, 2).keep.tolist() == [1, 3]
    assert fastv.select(attention.mean(0), 2).keep.tolist() == [1, 3]


def test_fastv_ties_go_to_lower_index_and_r_is_capped():
    assert fastv.select(torch.ones(1, 6), 3).keep.tolist() == [0, 1, 2]
    assert fastv.select(torch.rand(2, 5), 9).keep.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="num_retain"):
        fastv.select(torch.rand(2, 5), 0)


# DivPrune -----------------------------------------------------------------------------


def test_divprune_worked_example():
    """Tokens 0 and 1 are near-duplicates, 2 is orthogonal to both.
    Nearest-other distances: 0 -> ~0, 1 -> ~0, 2 -> ~1: the first pick is 2.
    Then min distance to {2}: token 0 has exactly 1, token 1 slightly less -> pick 0."""
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    assert divprune.select(emb, 2).keep.tolist() == [0, 2]


def test_divprune_matches_brute_force_max_min():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 16, generator=g)
    unit = torch.nn.functional.normalize(emb, dim=1)
    dist = 1 - unit @ unit.T
    nearest = (dist + torch.eye(40) * 10).min(1).values
    chosen = [int(nearest.argmax())]
    while len(chosen) < 10:
        gap = dist[:, chosen].min(1).values
        gap[chosen] = -1
        chosen.append(int(gap.argmax()))
    assert divprune.select(emb, 10).keep.tolist() == sorted(chosen)


@pytest.mark.parametrize("n, count", [(50, 7), (300, 33), (300, 300 - 1)])
def test_divprune_long_span_path_agrees_with_the_full_matrix(monkeypatch, n, count):
    """Spans above _FULL_MATRIX_MAX tokens take the chunked path; both give the same tokens."""
    emb = torch.randn(n, 32, generator=torch.Generator().manual_seed(n))
    full = divprune.select(emb, count).keep
    monkeypatch.setattr(divprune, "_FULL_MATRIX_MAX", 0)
    monkeypatch.setattr(divprune, "_CHUNK", 64)
    assert torch.equal(divprune.select(emb, count).keep, full)


def test_divprune_duplicates_still_give_r():
    emb = torch.ones(20, 4)
    assert divprune.select(emb, 7).keep.unique().numel() == 7


# DART ---------------------------------------------------------------------------------


def test_dart_worked_example():
    """6 visual tokens, 1 visual pivot, 1 text pivot, R = 4 -> 3 slots split 2 + 1.

    Keys: token 5 has the largest L1 norm -> visual pivot 5. Text pivot: the text token
    with the larger key norm (text token 1). Hidden angles (deg): tokens 0..5 at
    0, 10, 80, 90, 170, 5; text token 1 at 85.
    Visual pivot (5 deg) claims its 2 least similar: 170 (token 4), then 90 (token 3).
    Text pivot (85 deg) claims 1 least similar of the rest {0, 1, 2}: token 0 (0 deg).
    keep = [0, 3, 4, 5]."""
    deg = torch.tensor([0.0, 10, 80, 90, 170, 5]).deg2rad()
    hidden = torch.stack([deg.cos(), deg.sin()], 1)
    keys = torch.full((6, 3), 0.1)
    keys[5] = 1.0
    text_deg = torch.tensor([40.0, 85]).deg2rad()
    text_hidden = torch.stack([text_deg.cos(), text_deg.sin()], 1)
    text_keys = torch.tensor([[0.1, 0.1, 0.1], [0.5, 0.5, 0.5]])
    sel = dart.select(keys, hidden, 4, text_key_states=text_keys, text_normed_hidden_states=text_hidden,
                      num_visual_pivots=1, num_text_pivots=1)
    assert sel.keep.tolist() == [0, 3, 4, 5]


@pytest.mark.parametrize("r", [1, 3, 4, 5, 13, 64])
@pytest.mark.parametrize("text", [0, 2, 10])
def test_dart_keeps_exactly_r_with_visual_pivots(r, text):
    g = torch.Generator().manual_seed(r + text)
    keys, hidden = torch.randn(100, 8, generator=g), torch.randn(100, 16, generator=g)
    text_keys, text_hidden = torch.randn(text, 8, generator=g), torch.randn(text, 16, generator=g)
    sel = dart.select(keys, hidden, r, text_key_states=text_keys, text_normed_hidden_states=text_hidden)
    assert sel.keep.numel() == r and sel.keep.unique().numel() == r
    top = torch.sort(keys.abs().sum(1), descending=True).indices[: min(4, r)]
    assert set(top.tolist()) <= set(sel.keep.tolist())


# random and uniform -------------------------------------------------------------------


def test_random_is_seeded_and_sorted():
    a = random_method.select(576, 64, seed=3)
    assert torch.equal(a.keep, random_method.select(576, 64, seed=3).keep)
    assert not torch.equal(a.keep, random_method.select(576, 64, seed=4).keep)
    assert a.keep.numel() == 64 and torch.equal(a.keep, torch.sort(a.keep).values)
    with pytest.raises(ValueError, match="seed"):
        random_method.select(10, 3, seed=-1)


def test_uniform_worked_example_and_video_split():
    """(1, 4, 4), R = 4: rows 1 and 3, columns 1 and 3 -> [5, 7, 13, 15].
    (3, 4, 4), R = 7: frames take 3, 2, 2 tokens."""
    assert uniform.select((1, 4, 4), 4).keep.tolist() == [5, 7, 13, 15]
    keep = uniform.select((3, 4, 4), 7).keep
    assert torch.bincount(keep // 16).tolist() == [3, 2, 2]


@pytest.mark.parametrize("grid", [(1, 24, 24), (1, 7, 13), (4, 10, 3), (2, 1, 9)])
@pytest.mark.parametrize("r", [1, 5, 64, 1000])
def test_uniform_counts_and_spread(grid, r):
    t, h, w = grid
    keep = uniform.select(grid, r).keep
    assert keep.numel() == min(r, t * h * w) and keep.unique().numel() == keep.numel()
    if r == 64 and grid == (1, 24, 24):  # a 8 x 8 lattice with stride 3
        assert sorted({int(i) // 24 for i in keep}) == list(range(1, 24, 3))


@pytest.mark.parametrize("call,name", [
    (lambda: uniform.select((1, 0, 4), 3), "grid"),
    (lambda: random_method.select(0, 3), "num_tokens"),
    (lambda: divprune.select(torch.randn(5), 3), "embeddings"),
    (lambda: dart.select(torch.randn(5, 2), torch.randn(4, 2), 3), "hidden_states"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_every_method_returns_a_selection():
    h, k = torch.randn(36, 8), torch.randn(36, 8)
    outs = [fastv.select(torch.rand(2, 36), 5), dart.select(k, h, 5), divprune.select(h, 5),
            random_method.select(36, 5), uniform.select((1, 6, 6), 5),
            get_method("vlm_pruner").select(h, k, (1, 6, 6), 5)]
    for out in outs:
        assert isinstance(out, Selection) and out.keep.numel() == 5
