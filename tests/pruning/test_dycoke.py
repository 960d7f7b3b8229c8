"""DyCoke: the worked example, the authors' frame scheme, the same tokens as their
merging on the same inputs, the exactly-R counts and the harsh-rate fallback."""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import PruningConfig
from pruning.methods.dycoke import reference_frames, select
from tests.pruning.conftest import build_inputs, samples
from tests.reference.dycoke_ref import ttm


def _video(frames, cells, dim=16, seed=0, drift=0.3):
    """Frames that change a little from one to the next, as video does."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(cells, dim, generator=g)
    out = [first]
    for _ in range(frames - 1):
        out.append(out[-1] + drift * torch.randn(cells, dim, generator=g))
    return torch.cat(out)


def test_worked_example():
    a, b, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    embeddings = torch.stack([a, b, a, c])  # frame 0 = [a, b], frame 1 = [a, c]
    assert select(embeddings, (2, 1, 2), 3).keep.tolist() == [0, 1, 3]
    assert select(embeddings, (2, 1, 2), 9).keep.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="num_retain"):
        select(embeddings, (2, 1, 2), 0)
    with pytest.raises(ValueError, match="grid"):
        select(embeddings, (3, 1, 2), 2)


def test_reference_frames_follow_the_authors_loops():
    assert reference_frames(1) == [None]
    assert reference_frames(2) == [None, 0]
    assert reference_frames(3) == [None, 0, None]
    assert reference_frames(4) == [None, 0, None, 2]  # range(0, 0, 4) is empty
    assert reference_frames(5) == [None, 0, 0, 2, None]
    assert reference_frames(8) == [None, 0, 0, 2, None, 4, None, 6]
    assert reference_frames(9) == [None, 0, 0, 2, None, 4, 4, 6, None]


@pytest.mark.parametrize("frames", [2, 3, 5, 8, 9, 16])
@pytest.mark.parametrize("seed", range(3))
def test_same_tokens_as_the_authors_merging(frames, seed):
    """At R equal to their count for K = 0.7, the kept tokens are theirs, frame by frame."""
    cells = 20  # int(0.3 * 20) = 6 per referenced frame
    features = _video(frames, cells, seed=seed)
    pieces = ttm(features, cells, 0.7)
    theirs = torch.cat(pieces)
    if frames % 2:  # their concatenation drops an odd last frame; the method keeps it whole
        theirs = torch.cat([theirs, torch.arange((frames - 1) * cells, frames * cells)])
    ours = select(features, (frames, 4, 5), theirs.numel()).keep
    assert ours.tolist() == sorted(theirs.tolist())


@pytest.mark.parametrize("frames", [1, 2, 4, 7])
@pytest.mark.parametrize("rate", [0.3, 0.6, 0.9, 0.97])
def test_exactly_r_and_whole_reference_frames_first(frames, rate):
    rows, cols = 3, 4
    n = frames * rows * cols
    features = _video(frames, rows * cols, seed=frames)
    r = max(1, round(n * (1 - rate)))
    keep = select(features, (frames, rows, cols), r).keep
    assert keep.numel() == r and torch.equal(keep, torch.unique(keep))
    whole = [t for t, ref in enumerate(reference_frames(frames)) if ref is None]
    per_frame = rows * cols
    if r >= len(whole) * per_frame:
        for t in whole:
            assert set(range(t * per_frame, (t + 1) * per_frame)) <= set(keep.tolist())
    else:  # nothing from referenced frames; each reference frame keeps its first cell
        assert all(int(i) // per_frame in whole for i in keep)
        assert all(t * per_frame in keep.tolist() for t in whole[:r])


def test_harsh_rate_ranks_by_left_neighbour():
    # One frame 1 x 4: cells 0, 1 equal, 2 orthogonal to 1, 3 equal to 2.
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert select(e, (1, 1, 4), 2).keep.tolist() == [0, 2]
    # First column compares with the cell above: 2 x 2, cell 2 differs from cell 0.
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert select(e, (1, 2, 2), 2).keep.tolist() == [0, 2]


def test_referenced_frames_share_the_rest_evenly():
    frames, cells = 4, 10  # refs: [None, 0, None, 2]: two whole, two referenced
    features = _video(frames, cells, seed=5)
    keep = select(features, (frames, 2, 5), 2 * cells + 7).keep  # 7 left: 4 and 3
    per = torch.bincount(keep // cells, minlength=frames).tolist()
    assert per == [10, 4, 10, 3]


def test_deterministic_and_dtype_independent():
    features = _video(6, 12, seed=2)
    a = select(features, (6, 3, 4), 30).keep
    assert torch.equal(a, select(features.clone(), (6, 3, 4), 30).keep)
    assert torch.equal(a, select(features.double(), (6, 3, 4), 30).keep)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision"])
def test_video_spans_keep_exactly_r_on_tiny_models(tiny, family):
    model, processor = tiny(family)
    with torch.no_grad(), pruning.apply(model, PruningConfig(method="dycoke", pruning_rate=0.6)) as handle:
        model(**build_inputs(processor, family, list(samples(family))))
    spans = [s for sample in handle.stats.samples for s in sample]
    assert any(s.kind == "video" for s in spans)
    assert all(s.after == round(s.before * 0.4) == len(s.keep) for s in spans)
