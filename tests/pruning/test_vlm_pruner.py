"""VLM-Pruner selection: hand-worked cases, the spec's properties, and agreement with a
literal transcription of the spec (tests/reference/vlm_pruner_loop.py).

Both implementations run every behavioural test: ``select`` on CPU tensors takes the
compiled path (vlm_pruner_cpu), ``select_torch`` the path CUDA takes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pruning.methods import vlm_pruner, vlm_pruner_cpu
from tests.reference.vlm_pruner_loop import select_loop


@pytest.fixture(params=["cpu", "torch"])
def select(request):
    """vlm_pruner.select on the compiled CPU path, or on the torch path."""
    return vlm_pruner.select if request.param == "cpu" else vlm_pruner.select_torch


def angles(degrees: list[float]) -> torch.Tensor:
    """Unit vectors at the given angles: cosine similarity = cos(angle difference)."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1).float()


def fuse(h: torch.Tensor, target: int, members: list[int], deg: list[float], beta=0.3):
    """Expected SWA update of ``target`` from its assigned discarded ``members``."""
    w = [math.cos(math.radians(deg[i] - deg[target])) for i in members]
    agg = sum(wi / sum(w) * h[i] for wi, i in zip(w, members))
    return beta * h[target] + (1 - beta) * agg


def test_3x3_sequential_by_hand(select):
    """3x3 grid, one pivot, B = 1 (sequential greedy), lambda = 0.5, tau0 = 0.8, R = 4.

    Tokens (raster, (x, y) = (i % 3, i // 3)) carry 2-D unit hidden states at angles
        0: 20  1: 30  2: 100
        3: 40  4: 0   5: 65
        6: 45  7: 90  8: 180      (degrees), so S[i, j] = cos(a_i - a_j).
    Keys: token 4 has the largest L1 norm -> pivot p0 = 4, Sel = [4].
    nf = 1/sqrt(18); factor 1 + 0.5 d nf = 1.1179 at d = 1 and 1.1667 at d = sqrt(2).

    Round 1 (tau 0.8), bss vs {4}: 8: -1.167, 2: -0.203, 7: 0, 5: 0.472, 6: 0.825,
    3: 0.856, 1: 0.968, 0: 1.096 -> order 8, 2, 7, 5, 6, 3, 1, 0.
      [8]: -1.167 < 0.8 accept -> Sel [4, 8]
      [2]: max(cos 100, cos 80) = 0.174, d = sqrt(2) -> 0.203 accept -> Sel [4, 8, 2]
      [7]: max S = cos(90-100) = 0.985, d = 1 -> 1.101 reject
      [5]: max S = cos 35 = 0.819 (vs 2), d = 1 -> 0.916 reject
      [6]: max S = cos 45 = 0.707 (vs 4), d = sqrt(2) -> 0.825 reject
      [3]: 0.856, [1]: 0.968, [0]: 1.096 reject.
    Round 2 (tau 0.9): order 6 (0.825), 3 (0.856), 5 (0.916), ...
      [6]: 0.825 < 0.9 accept -> Sel [4, 8, 2, 6] = R.
    keep = [2, 4, 6, 8].

    SWA (argmax cos over Sel in order 4, 8, 2, 6):
      0 (20) -> 4 (cos 20 = .940 beats cos 25 vs 6);  1 (30) -> 6;  3 (40) -> 6;
      5 (65) -> 6 (cos 20 beats cos 35 vs 2);  7 (90) -> 2 (cos 10).
      So h4 <- .3 h4 + .7 h0; h2 <- .3 h2 + .7 h7; h6 <- .3 h6 + .7 avg_w(h1, h3, h5);
      h8 has no member and stays.
    """
    deg = [20, 30, 100, 40, 0, 65, 45, 90, 180]
    h = angles(deg)
    keys = torch.full((9, 2), 0.1)
    keys[4] = 1.0
    sel = select(h, keys, (1, 3, 3), 4, num_pivots=1, token_batch=1)
    assert sel.keep.tolist() == [2, 4, 6, 8]
    expected = torch.stack([fuse(h, 2, [7], deg), fuse(h, 4, [0], deg),
                            fuse(h, 6, [1, 3, 5], deg), h[8]])
    torch.testing.assert_close(sel.hidden_states, expected, rtol=1e-5, atol=1e-6)


def test_4x4_two_pivots_batched_truncation_by_hand(select):
    """4x4 grid, two pivots from keys, B = 4, lambda = 0 (positions unused), R = 8.

    Keys k_i = (x_i, y_i): token 15 at (3, 3) has the largest L1 norm -> p0 = 15; the
    farthest key from it is token 0 at (0, 0) -> p1 = 0. Hidden angles (degrees):
        0: 90   1: 45   2: 10   3: 75
        4: 30   5: 55   6: 20   7: 140
        8: 180  9: 200 10: 260 11: 40
       12: 5   13: 88  14: 48  15: 0
    With lambda = 0, bss = max S vs Sel = max(cos a, sin a) against {0 deg, 90 deg}.
    Round 1 (tau 0.8) order: 9 (-.342), 10 (-.174), 8 (0), 7 (.643), 1 (.707),
    14 (.743), 11 (.766), 5 (.819), 4 (.866), 6, 3, 2, 12, 13.
      batch [9, 10, 8, 7]: all < 0.8 -> Sel [15, 0, 9, 10, 8, 7]
      batch [1, 14, 11, 5]: re-scored vs Sel: .707, .743, .766 accept, .819 reject;
        three accepted but only 2 slots left -> the 2 lowest: 1 and 14 -> Sel = R.
    keep = [0, 1, 7, 8, 9, 10, 14, 15].

    SWA over Sel angles [0, 90, 200, 260, 180, 140, 45, 48]:
      2 (10) -> 15; 6 (20) -> 15; 12 (5) -> 15; 3 (75) -> 0; 13 (88) -> 0;
      4 (30) -> 1; 11 (40) -> 1; 5 (55) -> 14 (cos 7 beats cos 10 vs 1).
    """
    deg = [90, 45, 10, 75, 30, 55, 20, 140, 180, 200, 260, 40, 5, 88, 48, 0]
    h = angles(deg)
    keys = torch.tensor([[i % 4, i // 4] for i in range(16)], dtype=torch.float32)
    assert vlm_pruner.pivot_tokens(keys, 2).tolist() == [15, 0]
    assert vlm_pruner_cpu.pivot_tokens(keys.numpy(), 2).tolist() == [15, 0]
    expected_keep = [0, 1, 7, 8, 9, 10, 14, 15]
    expected = {0: fuse(h, 0, [3, 13], deg), 1: fuse(h, 1, [4, 11], deg),
                14: fuse(h, 14, [5], deg), 15: fuse(h, 15, [2, 6, 12], deg)}
    for grid in [(1, 4, 4), (1, 2, 8), (4, 2, 2)]:  # lambda = 0: the grid does not matter
        sel = select(h, keys, grid, 8, num_pivots=2, token_batch=4, spatial_lambda=0)
        assert sel.keep.tolist() == expected_keep
        want = torch.stack([expected.get(i, h[i]) for i in expected_keep])
        torch.testing.assert_close(sel.hidden_states, want, rtol=1e-5, atol=1e-6)


def structured(grid, dim=64, key_dim=32, seed=0, rank=4, noise=0.3):
    """Hidden states like a VLM's: a shared offset, a spatially smooth low-rank part and
    noise, so similarities are high and neighbours alike (several rounds happen)."""
    g = torch.Generator().manual_seed(seed)
    t, hgt, wid = grid
    n = t * hgt * wid
    coarse = torch.randn(t, rank, max(hgt // 3, 1), max(wid // 3, 1), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(hgt, wid), mode="bilinear")
    coef = smooth.permute(0, 2, 3, 1).reshape(n, rank)
    h = (2.0 * torch.randn(dim, generator=g) + coef @ torch.randn(rank, dim, generator=g)
         + noise * torch.randn(n, dim, generator=g))
    k = h[:, :key_dim] @ torch.randn(key_dim, key_dim, generator=g) / key_dim ** 0.5
    return h, k


CASES = [
    # grid, R, parameters
    ((1, 6, 6), 4, {}),
    ((1, 12, 12), 16, {}),
    ((1, 12, 12), 48, {"token_batch": 5}),
    ((1, 9, 16), 30, {"threshold": 0.5, "spatial_lambda": 2.0}),
    ((1, 10, 10), 11, {"top_channels": 8, "num_pivots": 2}),
    ((4, 6, 6), 16, {}),
    ((8, 4, 4), 20, {"temporal_scale": 2.0, "token_batch": 3}),
    ((2, 8, 8), 40, {"token_batch": 1}),
    ((1, 8, 8), 60, {"merge_weight": 0.0}),
    ((1, 8, 8), 2, {}),  # fewer slots than pivots
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("grid,r,params", CASES)
def test_matches_literal_transcription(grid, r, params, seed, select):
    h, k = structured(grid, seed=seed)
    fast = select(h, k, grid, r, **params)
    keep, fused, _ = select_loop(h, k, grid, r, **params)
    assert fast.keep.tolist() == keep.tolist()
    torch.testing.assert_close(fast.hidden_states, fused, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid,r,params", CASES)
def test_exactly_r_pivots_kept_sorted(grid, r, params, select):
    h, k = structured(grid, seed=11)
    sel = select(h, k, grid, r, **params)
    assert sel.keep.dtype == torch.long and sel.keep.numel() == r
    assert torch.equal(sel.keep, torch.sort(sel.keep).values)
    assert sel.keep.unique().numel() == r
    assert sel.hidden_states.shape == (r, h.shape[1])
    pivots = vlm_pruner.pivot_tokens(k, min(params.get("num_pivots", 4), r))
    assert set(pivots.tolist()) <= set(sel.keep.tolist())


def sequential_greedy(h, k, grid, r, lam=0.5, tau0=0.8, kappa=4, q=256):
    """Plain sequential greedy over the spec, one candidate at a time: the next token
    in bss order is accepted if its score against the current Sel is below tau."""
    n = h.shape[0]
    sel = [int(torch.argmax(k.abs().sum(1)))]
    while len(sel) < min(kappa, r):
        d = torch.stack([(k - k[p]).norm(dim=1) for p in sel], 1).min(1).values
        d[sel] = -1
        sel.append(int(torch.argmax(d)))
    var = h.var(0)
    ch = torch.sort(var, descending=True, stable=True).indices[:q]
    u = torch.nn.functional.normalize(h[:, ch], dim=1, eps=1e-8)
    t, gh, gw = grid
    pos = torch.tensor([[i // (gh * gw), i // gw % gh, i % gw] for i in range(n)]).float()
    nf = 1 / math.sqrt(gh ** 2 + gw ** 2 + (t ** 2 if t > 1 else 0))

    def score(i):
        return float((1 + lam * nf * (pos[sel] - pos[i]).norm(dim=1).min()) * (u[sel] @ u[i]).max())

    tau = tau0
    while len(sel) < r:
        rest = sorted((score(i), i) for i in range(n) if i not in sel)
        for rank, (_, i) in enumerate(rest):
            accepted = score(i) < tau
            if accepted:
                sel.append(i)
            if len(sel) == r or (rank == 0 and not accepted):
                break
        tau += 0.1
    return sorted(sel)


@pytest.mark.parametrize("grid,r", [((1, 6, 6), 9), ((1, 8, 8), 20), ((2, 5, 5), 12)])
def test_batch_of_one_is_sequential_greedy(grid, r, select):
    h, k = structured(grid, seed=3)
    sel = select(h, k, grid, r, token_batch=1)
    assert sel.keep.tolist() == sequential_greedy(h, k, grid, r)


def test_spatial_lambda_zero_ignores_positions(select):
    h, k = structured((1, 12, 12), seed=5)
    results = {tuple(select(h, k, g, 20, spatial_lambda=0).keep.tolist())
               for g in [(1, 12, 12), (1, 6, 24), (4, 6, 6), (1, 1, 144)]}
    assert len(results) == 1
    with_space = select(h, k, (1, 12, 12), 20, spatial_lambda=5.0)
    assert tuple(with_space.keep.tolist()) not in results  # the term does act when > 0


@pytest.mark.parametrize("make", [
    lambda n: torch.ones(n, 32),                    # constant
    lambda n: torch.zeros(n, 32),                   # all zero: cosine 0
    lambda n: torch.randn(2, 32).repeat(n // 2, 1),  # two distinct vectors, duplicated
])
def test_degenerate_inputs_give_r_tokens_without_nan(make, select):
    h = make(64)
    sel = select(h, h.clone(), (1, 8, 8), 10)
    assert sel.keep.unique().numel() == 10
    assert torch.isfinite(sel.hidden_states).all()


def test_keeping_everything_changes_nothing(select):
    h, k = structured((1, 6, 6))
    for r in (36, 100):
        sel = select(h, k, (1, 6, 6), r)
        assert sel.keep.tolist() == list(range(36))
        assert torch.equal(sel.hidden_states, h)


def test_deterministic_and_dtype_preserved(select):
    h, k = structured((2, 6, 6), seed=9)
    a = select(h.bfloat16(), k.bfloat16(), (2, 6, 6), 12)
    b = select(h.bfloat16(), k.bfloat16(), (2, 6, 6), 12)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.hidden_states, b.hidden_states)
    assert a.hidden_states.dtype == torch.bfloat16


def test_video_positions_and_normaliser():
    """grid (2, 2, 3), temporal_scale 2: token 7 is frame 1, row 0, column 1 -> (2, 0, 1);
    nf = 1/sqrt(T^2 + H^2 + W^2) = 1/sqrt(17); a single frame uses 1/sqrt(H^2 + W^2)."""
    pos, nf = vlm_pruner.token_positions((2, 2, 3), 2.0)
    assert pos[7].tolist() == [2.0, 0.0, 1.0]
    assert pos[5].tolist() == [0.0, 1.0, 2.0]
    assert nf == pytest.approx(1 / math.sqrt(17))
    assert vlm_pruner.token_positions((1, 2, 3), 2.0)[1] == pytest.approx(
        1 / math.sqrt(13))


def test_temporal_scale_changes_video_selection(select):
    h, k = structured((4, 6, 6), seed=4)
    near = select(h, k, (4, 6, 6), 24, temporal_scale=0.0)
    far = select(h, k, (4, 6, 6), 24, temporal_scale=8.0)
    assert near.keep.tolist() != far.keep.tolist()


@pytest.mark.parametrize("kwargs,name", [
    ({"num_retain": 0}, "num_retain"),
    ({"num_retain": -3}, "num_retain"),
    ({"grid": (1, 5, 5)}, "grid"),
    ({"grid": (1, 0, 36)}, "grid"),
    ({"num_pivots": 0}, "num_pivots"),
    ({"top_channels": -1}, "top_channels"),
    ({"threshold": -0.1}, "threshold"),
    ({"spatial_lambda": -1.0}, "spatial_lambda"),
    ({"token_batch": 0}, "token_batch"),
    ({"merge_weight": 1.5}, "merge_weight"),
    ({"merge_weight": -0.5}, "merge_weight"),
    ({"temporal_scale": -2.0}, "temporal_scale"),
    ({"key_states": torch.zeros(35, 8)}, "key_states"),
    ({"hidden_states": torch.zeros(36)}, "hidden_states"),
    ({"hidden_states": torch.full((36, 8), float("nan"))}, "hidden_states"),
])
def test_bad_arguments_name_the_argument(kwargs, name, select):
    args = {"hidden_states": torch.randn(36, 8), "key_states": torch.randn(36, 8),
            "grid": (1, 6, 6), "num_retain": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        select(**args)


def brute_force_pivots(keys: np.ndarray, count: int) -> list[int]:
    """Farthest-point sampling in float64 with every distance computed."""
    k = keys.astype(np.float64)
    pivots = [int(np.argmax(np.abs(k).sum(1)))]
    while len(pivots) < count:
        nearest = np.min([((k - k[p]) ** 2).sum(1) for p in pivots], axis=0)
        nearest[pivots] = -1
        pivots.append(int(np.argmax(nearest)))
    return pivots


@pytest.mark.parametrize("seed", range(8))
def test_lazy_farthest_point_sampling_is_exact(seed):
    """The compiled stage 1 measures most tokens against few pivots; it must still pick
    what measuring everything picks, including among duplicated keys."""
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((200, 24)).astype(np.float32) * rng.uniform(0.1, 3, 24)
    keys[50:60] = keys[7]  # duplicates: distinct pivots, lowest index on ties
    for count in (1, 2, 4, 9, 30):
        got = vlm_pruner_cpu.pivot_tokens(keys, count).tolist()
        assert got == brute_force_pivots(keys, count)
        assert got == vlm_pruner.pivot_tokens(torch.from_numpy(keys), count).tolist()
    same = np.ones((12, 5), np.float32)
    assert vlm_pruner_cpu.pivot_tokens(same, 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("n", [2, 3, 5, 31, 32, 33, 35, 67, 577])
def test_channel_variances_one_pass_match_float64(n):
    """Blocks of 32 rows taken four at a time: every remainder shape, and channels whose
    offset dwarfs their spread (where a float32 sum of squares would cancel)."""
    rng = np.random.default_rng(n)
    spread, offset = rng.uniform(0.01, 5, 70), rng.uniform(-300, 300, 70)
    hidden = (rng.standard_normal((n, 70)) * spread + offset).astype(np.float32)
    want = np.var(hidden.astype(np.float64), axis=0, ddof=1)
    np.testing.assert_allclose(vlm_pruner_cpu.channel_variances(hidden), want, rtol=1e-5)


def test_top_channels_rank_ties_to_the_lower_channel():
    variance = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5])
    top = vlm_pruner_cpu._top_channels
    assert top(variance, 2).tolist() == [1, 3]
    assert top(variance, 3).tolist() == [1, 2, 3]  # 2 wins the tie among 2, 4, 5
    assert top(variance, 5).tolist() == [1, 2, 3, 4, 5]
    assert top(variance, 9).tolist() == list(range(7))
    assert top(np.zeros(6), 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid,r,params", CASES)
def test_cpu_and_torch_paths_agree(grid, r, params, seed):
    h, k = structured(grid, dim=96, key_dim=40, seed=100 + seed)
    cpu = vlm_pruner.select(h, k, grid, r, **params)
    other = vlm_pruner.select_torch(h, k, grid, r, **params)
    assert cpu.keep.tolist() == other.keep.tolist()
    torch.testing.assert_close(cpu.hidden_states, other.hidden_states, rtol=1e-4, atol=1e-5)
