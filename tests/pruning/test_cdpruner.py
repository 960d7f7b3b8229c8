"""CDPruner: the worked example, the same tokens as the authors' conditional DPP on the
same inputs, the relevance's sign and normalisation, exhausted gains, and exactly R on
tiny real models."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import pruning
from pruning import PruningConfig
from pruning.methods.cdpruner import greedy_map, instruction_relevance, select
from tests.pruning.conftest import build_inputs, samples
from tests.reference.cdpruner_ref import cdpruner_select

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "llava_onevision"]


def _inputs(n, d=32, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)


def test_worked_example():
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert select(e, torch.empty(0, 2), 2).keep.tolist() == [0, 2]
    assert select(e, torch.empty(0, 2), 5).keep.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="num_retain"):
        select(e, torch.empty(0, 2), 0)


@pytest.mark.parametrize("seed", range(6))
def test_same_tokens_as_the_authors_code(seed):
    """Their computation with both relevance sides in our space selects our tokens, for
    every R up to the kernel's rank (D)."""
    n = [64, 100, 37, 144, 50, 80][seed]
    emb, text = _inputs(n, seed=seed)
    for r in sorted({1, 2, 5, 16, 31, min(32, n - 1)}):
        theirs = cdpruner_select(emb, emb, text, r)
        assert select(emb, text, r).keep.tolist() == theirs.tolist(), (n, r)


def test_greedy_is_the_map_of_the_kernel_on_small_sets():
    """On tiny kernels the first two picks maximise det(L_S) over all singletons and
    then all pairs containing the first pick (the greedy's definition)."""
    emb, text = _inputs(9, d=5, seed=3)
    unit = F.normalize(emb, dim=1)
    rel = instruction_relevance(unit, text)
    kernel = rel[:, None] * (unit @ unit.T) * rel[None, :]
    picks = greedy_map(kernel, rel, 3).tolist()
    assert picks[0] == int(torch.argmax(torch.diagonal(kernel)))
    best = max((j for j in range(9) if j != picks[0]),
               key=lambda j: float(torch.det(kernel[[picks[0], j]][:, [picks[0], j]])))
    assert picks[1] == best
    dets = {c: float(torch.det(kernel[list(c)][:, list(c)])) for c in itertools.combinations(range(9), 3)
            if picks[0] in c and picks[1] in c}
    assert picks[2] in max(dets, key=dets.get)


def test_relevance_is_the_negated_normalised_mean_cosine():
    unit = torch.eye(3)
    text = torch.tensor([[1.0, 0.0, 0.0]])  # cosines 1, 0, 0 -> negated -1, 0, 0
    rel = instruction_relevance(unit, text)
    torch.testing.assert_close(rel, torch.tensor([1e-6, 1 + 1e-6, 1 + 1e-6]))
    assert torch.equal(instruction_relevance(unit, torch.empty(0, 3)), torch.ones(3))
    assert torch.equal(instruction_relevance(unit, torch.ones(1, 3)), torch.ones(3))  # all equal


def test_exhausted_gains_fall_back_to_relevance_without_nan():
    emb, text = _inputs(40, d=4, seed=1)  # rank 4: gains run out after 4 picks
    keep = select(emb, text, 12).keep
    assert keep.numel() == 12 and torch.equal(keep, torch.unique(keep))
    dup = torch.cat([emb[:3]] * 5)  # 15 tokens, 3 distinct
    keep = select(dup, text, 6).keep
    assert keep.numel() == 6
    assert len({tuple(dup[i].tolist()) for i in keep.tolist()[:3]}) >= 1


def test_deterministic_and_dtype_independent():
    emb, text = _inputs(120, seed=4)
    a = select(emb, text, 20).keep
    assert torch.equal(a, select(emb.clone(), text.clone(), 20).keep)
    assert torch.equal(a, select(emb.double(), text.double(), 20).keep)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_span_keeps_exactly_r(tiny, family):
    model, processor = tiny(family)
    inputs = build_inputs(processor, family, list(samples(family)))
    with torch.no_grad(), pruning.apply(model, PruningConfig(method="cdpruner", pruning_rate=0.75)) as handle:
        model(**inputs)
    spans = [s for sample in handle.stats.samples for s in sample]
    assert spans and all(s.after == round(s.before * 0.25) == len(s.keep) for s in spans)


def test_the_question_conditions_the_selection(tiny):
    """Same image, another question: the relevance, and so the kept tokens, change (the
    unconditional DPP would keep the same)."""
    from tests.pruning.conftest import image

    model, processor = tiny("qwen2_vl")
    picture = image(224, 224, 0)
    kept = []
    for question in ("What is shown?", "Count the red squares near the left border, then the blue ones."):
        content = [{"type": "image"}, {"type": "text", "text": question}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        inputs = processor(text=[text], images=[picture], return_tensors="pt")
        with torch.no_grad(), pruning.apply(model, PruningConfig(method="cdpruner", pruning_rate=0.75)) as handle:
            model(**inputs)
        kept.append(handle.stats.samples[0][0].keep)
    assert kept[0] != kept[1]
