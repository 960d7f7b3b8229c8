"""Time VLM-Pruner's selection against a literal one-batch-at-a-time transcription.

Both run on the same inputs, interleaved (each loop run follows its share of fast
runs, so load from elsewhere hits both alike), and must select the same tokens. On the
CPU the fast path is the compiled one (pruning/methods/vlm_pruner_cpu.py; the first
call compiles it, or loads numba's on-disk cache). Inputs are built like a VLM's
layer-1 outputs: a large shared offset, a spatially smooth low-rank part and noise, so
tokens are alike (mean screened cosine ~0.7, printed) and neighbours more so.

    python benchmarks/selection.py --threads 1           # CPU, all sizes
    python benchmarks/selection.py --sizes 576 1296 --dims 4096
    python benchmarks/selection.py --device cuda         # the torch path on the GPU as well

Prints one row per (N, D): median milliseconds of the whole ``select`` for each
implementation and their ratio (literal / fast), then the same for stage 2 alone (the
rounds of parallel greedy, given the same pivots; the literal loop also gets its N x N
similarity and distance matrices precomputed for free). The literal loop is skipped
above --skip-loop-above tokens (N x N matrices; seconds per call).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pruning.methods import vlm_pruner, vlm_pruner_cpu  # noqa: E402
from tests.reference.vlm_pruner_loop import rounds_loop, select_loop  # noqa: E402

GRIDS = {576: (1, 24, 24), 1296: (1, 36, 36), 4096: (16, 16, 16), 16384: (1, 128, 128)}
KEY_DIMS = {3584: 512, 4096: 4096}  # Qwen2-VL-7B (4 KV heads x 128), LLaVA-1.5-7B (32 x 128)


def vlm_like(grid, dim, key_dim, seed=0, rank=16, offset=3.0):
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    n = t * h * w
    coarse = torch.randn(t, rank, max(h // 4, 1), max(w // 4, 1), generator=g)
    coef = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
    coef = coef.permute(0, 2, 3, 1).reshape(n, rank)
    hidden = (offset * torch.randn(dim, generator=g) + coef @ torch.randn(rank, dim, generator=g) * 0.5
              + 0.5 * torch.randn(n, dim, generator=g))
    proj = torch.randn(dim, key_dim, generator=g) / math.sqrt(dim)
    return hidden, hidden @ proj


def timed(fn, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, out


def timed_side_by_side(fast, loop, repeats, loop_repeats):
    """Median ms of ``fast`` and ``loop`` (CPU), interleaved: each loop run follows its
    share of fast runs, so a change in the machine's load hits both alike."""
    fast_times, loop_times, fast_out, loop_out = [], [], None, None
    per_loop = math.ceil(repeats / loop_repeats)
    for _ in range(loop_repeats):
        for _ in range(per_loop):
            start = time.perf_counter()
            fast_out = fast()
            fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        loop_out = loop()
        loop_times.append(time.perf_counter() - start)
    return (statistics.median(fast_times) * 1e3, fast_out,
            statistics.median(loop_times) * 1e3, loop_out)


def stage_times(hidden, keys, grid, r, repeats):
    """Median ms of each compiled stage, run in sequence as ``select`` runs them (so each
    finds the caches as a real call leaves them)."""
    h, k = hidden.numpy(), keys.numpy()
    pos, nf = vlm_pruner.token_positions(grid, 1.0)
    stages = {
        "pivots": lambda out: vlm_pruner_cpu.pivot_tokens(k, 4),
        "screening": lambda out: vlm_pruner_cpu.screened_unit_vectors(h, 256),
        "rounds": lambda out: vlm_pruner_cpu.centrifugal_selection(
            out["screening"], pos, nf, out["pivots"], r, 0.8, 0.5, 16, vlm_pruner.TAU_STEP),
        "fusion": lambda out: vlm_pruner_cpu.similarity_weighted_aggregation(
            h, *out["rounds"], 0.3, vlm_pruner.MIN_WEIGHT_SUM),
    }
    times = {name: [] for name in stages}
    for _ in range(repeats):
        out = {}
        for name, stage in stages.items():
            start = time.perf_counter()
            out[name] = stage(out)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


class _OpCounter(TorchDispatchMode):
    """Counts the torch ops a call dispatches (views aside) and its host syncs, leaving
    out what runs inside the window resolver (one Triton kernel launch on CUDA)."""

    VIEWS = {"select.int", "slice.Tensor", "unsqueeze.default", "squeeze.dim", "permute.default",
             "split.Tensor", "t.default", "expand.default", "view.default", "_local_scalar_dense.default"}

    def __init__(self):
        super().__init__()
        self.ops = self.syncs = self.windows = 0
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func).removeprefix("aten.")
        if not self.paused:
            self.ops += name not in self.VIEWS
            # .item()/.tolist(), nonzero and boolean-mask indexing wait for the device.
            bool_index = name == "index.Tensor" and any(
                i is not None and i.dtype == torch.bool for i in args[1])
            self.syncs += name in ("_local_scalar_dense.default", "nonzero.default") or bool_index
        return func(*args, **(kwargs or {}))

    def count(self, fn):
        resolve = vlm_pruner._resolve_window_torch

        def paused(*args):
            self.windows += 1
            self.paused = True
            try:
                return resolve(*args)
            finally:
                self.paused = False

        vlm_pruner._resolve_window_torch = paused
        try:
            with self:
                fn()
        finally:
            vlm_pruner._resolve_window_torch = resolve
        return self


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GRIDS), choices=list(GRIDS),
                        help="numbers of visual tokens N (default: all)")
    parser.add_argument("--dims", type=int, nargs="+", default=list(KEY_DIMS), choices=list(KEY_DIMS),
                        help="hidden sizes D (default: 3584 4096)")
    parser.add_argument("--pruning-rate", type=float, default=0.889)
    parser.add_argument("--repeats", type=int, default=21, help="timed repeats of the fast path")
    parser.add_argument("--loop-repeats", type=int, default=7, help="timed repeats of the literal loop")
    parser.add_argument("--skip-loop-above", type=int, default=4096,
                        help="do not run the literal loop for N above this (it is slow)")
    parser.add_argument("--device", default="cpu", help="device for an extra column of the fast path")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--stages", action="store_true",
                        help="also print the median ms of each compiled CPU stage, run in sequence")
    parser.add_argument("--count-torch-ops", action="store_true",
                        help="also print what one call of the torch path (what CUDA runs) dispatches "
                             "on the CPU: windows, torch ops and host syncs (its launch-bound cost)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = torch.device("cpu")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"pruning rate {args.pruning_rate:.1%}, token_batch 16; times in ms (median)")
    head = (f"{'N':>6} {'D':>5} {'R':>5} {'cos':>5} | {'fast':>8} {'loop':>8} {'ratio':>6} {'same':>5} |"
            f" {'rounds: fast':>12} {'loop':>8} {'ratio':>6}")
    if device.type != "cpu":
        head += f" | {device.type:>8}"
    print(head)
    for n in args.sizes:
        grid = GRIDS[n]
        r = round(n * (1 - args.pruning_rate))
        for dim in args.dims:
            hidden, keys = vlm_like(grid, dim, KEY_DIMS[dim])
            pivots = vlm_pruner_cpu.pivot_tokens(keys.numpy(), 4)
            unit = vlm_pruner_cpu.screened_unit_vectors(hidden.numpy(), 256)
            pos, nf = vlm_pruner.token_positions(grid, 1.0)
            mean_cos = float((unit.mean(0) @ unit.mean(0)) * n / (n - 1) - 1 / (n - 1))
            vlm_pruner.select(hidden, keys, grid, r)  # warm-up (and compilation)

            def fast():
                return vlm_pruner.select(hidden, keys, grid, r)

            def fast_rounds():
                return vlm_pruner_cpu.centrifugal_selection(unit, pos, nf, pivots, r, 0.8, 0.5, 16,
                                                            vlm_pruner.TAU_STEP)

            row = f"{n:>6} {dim:>5} {r:>5} {mean_cos:>5.2f} |"
            if n <= args.skip_loop_above:
                unit_t, pos_t = torch.from_numpy(unit), torch.tensor(pos)
                sim, dist = unit_t @ unit_t.T, torch.cdist(pos_t, pos_t)
                fast_ms, fast_sel, loop_ms, (keep, _, _) = timed_side_by_side(
                    fast, lambda: select_loop(hidden, keys, grid, r), args.repeats, args.loop_repeats)
                rounds_ms, _, loop_rounds_ms, _ = timed_side_by_side(
                    fast_rounds, lambda: rounds_loop(sim, dist, nf, pivots.tolist(), r),
                    args.repeats, args.loop_repeats)
                same = torch.equal(fast_sel.keep, keep)
                row += (f" {fast_ms:>8.2f} {loop_ms:>8.1f} {loop_ms / fast_ms:>5.1f}x {str(same):>5} |"
                        f" {rounds_ms:>12.2f} {loop_rounds_ms:>8.1f} {loop_rounds_ms / rounds_ms:>5.1f}x")
            else:
                fast_ms, fast_sel = timed(fast, args.repeats, cpu)
                rounds_ms, _ = timed(fast_rounds, args.repeats, cpu)
                row += f" {fast_ms:>8.2f} {'-':>8} {'-':>6} {'-':>5} | {rounds_ms:>12.2f} {'-':>8} {'-':>6}"
            if device.type != "cpu":
                hd, kd = hidden.to(device), keys.to(device)
                vlm_pruner.select(hd, kd, grid, r)
                dev_ms, dev = timed(lambda: vlm_pruner.select(hd, kd, grid, r), args.repeats, device)
                row += f" | {dev_ms:>8.2f}"
                if not torch.equal(dev.keep.cpu(), fast_sel.keep):
                    row += " (selection differs from CPU)"
            print(row, flush=True)
            if args.count_torch_ops:
                counted = _OpCounter().count(lambda: vlm_pruner.select_torch(hidden, keys, grid, r))
                print(f"        torch path: {counted.windows} windows, {counted.ops} torch ops, "
                      f"{counted.syncs} host syncs", flush=True)
            if args.stages:
                times = stage_times(hidden, keys, grid, r, 5 * args.repeats)
                print("        stages (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()),
                      flush=True)


if __name__ == "__main__":
    main()
