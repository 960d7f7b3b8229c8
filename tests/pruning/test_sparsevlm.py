"""SparseVLM: the worked example, the exact counts, the same kept tokens and recycled
states as the authors' step on the same inputs, DPC-kNN against theirs, and a
progressive run on tiny real models."""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import PruningConfig
from pruning.methods.sparsevlm import cluster_and_merge, rank, recycled, select, split
from tests.pruning.conftest import build_inputs, samples
from tests.reference import sparsevlm_ref as ref

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "llava_onevision"]


def _inputs(n, m=9, d=24, heads=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g)
    text = torch.randn(m, d, generator=g)
    attention = torch.randn(heads, m, n, generator=g).softmax(dim=-1)
    return hidden, text, attention


def test_worked_example():
    n, d = 20, 6
    hidden = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    attention = torch.arange(n, dtype=torch.float32).expand(2, 3, n)  # token i ranked i
    sel = select(hidden, hidden, torch.randn(3, d), attention, 5)
    kept = sel.keep.tolist()
    assert len(kept) == 5 and kept[1:] == [16, 17, 18, 19] and 11 <= kept[0] <= 15
    torch.testing.assert_close(sel.hidden_states[1:], hidden[16:])
    torch.testing.assert_close(sel.hidden_states[0], hidden[11:16].mean(0), rtol=1e-5, atol=1e-5)
    assert select(hidden, hidden, torch.randn(3, d), attention, 30).keep.tolist() == list(range(n))
    with pytest.raises(ValueError, match="num_retain"):
        select(hidden, hidden, torch.randn(3, d), attention, 0)
    with pytest.raises(ValueError, match="recycle_ratio"):
        select(hidden, hidden, torch.randn(3, d), attention, 4, recycle_ratio=1.5)
    with pytest.raises(ValueError, match="does not match"):
        select(hidden, hidden, torch.randn(4, d), attention, 4)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 576, 2000])
def test_split_is_exact(n):
    for count in range(1, n + 1, max(1, n // 97)):
        kept, clusters = split(n, count, 0.3, 0.1)
        assert kept + clusters == count and kept >= 0 and clusters >= 0
        if count < n and kept > 0:
            assert clusters == int(recycled(n - kept, 0.3) * 0.1) + 1
    assert split(576, 64, 0.3, 0.1) == (48, 16)
    assert split(576, 64, 0.0, 0.1) == (64, 0)


@pytest.mark.parametrize("seed", range(6))
def test_same_tokens_and_states_as_the_authors_step(seed):
    """At R = their kept count plus their clusters (``split`` takes the largest kept count
    that adds up to R: two kept counts can, when one more dropped token adds a cluster),
    the kept tokens, the recycled centres and the merged states are theirs."""
    n = [64, 144, 100, 576, 90, 300][seed]
    hidden, text, attention = _inputs(n, seed=seed)
    raters = ref.text_raters(hidden, text)
    for r in sorted({5, 13, n // 4, n // 2}):
        keep, clusters = split(n, r, 0.3, 0.1)
        if keep == 0:  # R below the clusters of dropping everything: our own case (all clusters)
            assert clusters == r and select(hidden, hidden, text, attention, r).keep.numel() == r
            continue
        kept, merged, centres = ref.sparsify(hidden, attention, raters, keep)
        assert merged.shape[0] == clusters
        ours = select(hidden, hidden, text, attention, r)
        assert set(ours.keep.tolist()) == set(kept.tolist()) | set(centres.tolist()), (n, r)
        slots = {int(i): s for s, i in enumerate(ours.keep.tolist())}
        torch.testing.assert_close(ours.hidden_states[[slots[int(i)] for i in kept]], hidden[kept])
        torch.testing.assert_close(ours.hidden_states[[slots[int(i)] for i in centres]], merged,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("clusters", [2, 3, 8])
def test_dpc_knn_equals_the_authors(seed, clusters):
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(seed))
    means, centres = cluster_and_merge(x, clusters)
    their_means, their_centres = ref.cluster_and_merge(x, clusters)
    assert centres.tolist() == their_centres.tolist()
    torch.testing.assert_close(means, their_means, rtol=1e-5, atol=1e-5)


def test_one_cluster_is_the_pool_mean_at_its_densest_first_token():
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(3))
    means, centres = cluster_and_merge(x, 1)
    their_means, _ = ref.cluster_and_merge(x, 1, noise="random")  # their centre is random here
    torch.testing.assert_close(means, their_means, rtol=1e-5, atol=1e-5)
    assert centres.tolist() == [0]


def test_raters_and_degenerate_text():
    hidden, text, attention = _inputs(30, seed=7)
    raters = ref.text_raters(hidden, text)
    expected = attention.mean(0)[raters].mean(0)
    torch.testing.assert_close(rank(hidden, text, attention), expected)
    empty = select(hidden, hidden, torch.empty(0, 24), torch.empty(4, 0, 30), 6)
    assert empty.keep.numel() == 6  # equal ranks: the lowest indices, plus a cluster
    assert empty.keep.tolist()[:5] == [0, 1, 2, 3, 4]


def test_deterministic():
    hidden, text, attention = _inputs(200, seed=9)
    a, b = select(hidden, hidden, text, attention, 40), select(hidden.clone(), hidden.clone(), text.clone(), attention.clone(), 40)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.hidden_states, b.hidden_states)


@pytest.mark.parametrize("family", FAMILIES)
def test_progressive_stages_keep_exactly_r_on_tiny_models(tiny, family):
    model, processor = tiny(family)
    config = PruningConfig.from_dict({"method": "sparsevlm", "pruning_rate": 0.875, "stages": [1, 2, 3]})
    with torch.no_grad(), pruning.apply(model, config) as handle:
        model(**build_inputs(processor, family, list(samples(family))))
    spans = [s for sample in handle.stats.samples for s in sample]
    assert spans
    for s in spans:
        assert s.after == len(s.keep) == config.num_retain_for(s.before, len(config.prune_layers) - 1)
        left = [int(v) for v in s.stages]
        assert left == sorted(left, reverse=True) and left[-1] == s.after


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_input_embeddings_are_the_llm_inputs_at_every_stage(tiny, family):
    """The raters' signals are the states entering decoder layer 0, at a stage before a
    later layer: the span's (the survivors' at the second stage) and the text's after it."""
    from pruning.methods import get_method
    from pruning.methods import sparsevlm

    model, processor = tiny(family)
    inputs = build_inputs(processor, family, ["image"])
    with torch.no_grad():
        embeddings = model(**inputs, output_hidden_states=True).hidden_states[0][0]
    positions = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(1)
    after = torch.arange(int(positions.max()) + 1, inputs["input_ids"].shape[1])
    seen = []
    spec = get_method("sparsevlm")

    def spy(hidden_states, input_embeddings, text_input_embeddings, text_attention, num_retain, **params):
        seen.append((input_embeddings, text_input_embeddings))
        return sparsevlm.select(hidden_states, input_embeddings, text_input_embeddings, text_attention,
                                num_retain, **params)

    object.__setattr__(spec, "select", spy)
    try:
        config = PruningConfig.from_dict({"method": "sparsevlm", "pruning_rate": 0.75, "stages": [2, 3]})
        with torch.no_grad(), pruning.apply(model, config) as handle:
            model(**inputs)
    finally:
        object.__setattr__(spec, "select", sparsevlm.select)
    (first, text_first), (second, text_second) = seen
    torch.testing.assert_close(first, embeddings[positions])
    torch.testing.assert_close(text_first, embeddings[after])
    torch.testing.assert_close(text_second, embeddings[after])
    survivors = handle.stats.samples[0][0]
    assert second.shape[0] == survivors.stages[0] < first.shape[0]
    rows = [any(torch.equal(row, e) for e in embeddings[positions]) for row in second]
    assert sum(rows) >= second.shape[0] - 1  # the survivors' own rows (a recycled slot keeps its centre's)
