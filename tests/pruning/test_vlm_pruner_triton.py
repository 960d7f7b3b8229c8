"""The Triton window kernel of VLM-Pruner's torch path (pruning/methods/vlm_pruner_triton.py).

There is no GPU here, so the kernel is checked two ways: compiled for sm_80 and sm_90
(Triton's ptxas runs without a device), and run under Triton's interpreter
(``TRITON_INTERPRET=1``: numpy on the CPU) in a subprocess, where ``select_torch`` on CPU
tensors takes the kernel. There, every torch-path test of test_vlm_pruner.py (hand-worked
cases, properties, the literal transcription) and the window-level comparison below run
through it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pruning.methods import vlm_pruner, vlm_pruner_triton

triton = pytest.importorskip("triton")
INTERPRETED = triton.knobs.runtime.interpret
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(INTERPRETED, reason="compiles the kernel, which the interpreter replaces")
@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("token_batch", [1, 16, 64])
def test_kernel_compiles_for_gpus(capability, token_batch):
    """The kernel compiles to a cubin for Ampere and Hopper, with an exact square root and
    no fused multiply-adds (the torch path's arithmetic)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pointers = ["sim_ptr", "pos_ptr", "max_sim_ptr", "min_dist_ptr"]
    signature = {name: "*fp32" for name in pointers}
    signature.update(accept_ptr="*i8", length="i32", room="i32", threshold="fp32", scale="fp32",
                     BATCH="constexpr", BLOCK="constexpr", BLOCK_BATCH="constexpr")
    constants = {"BATCH": token_batch, "BLOCK": 1024,
                 "BLOCK_BATCH": triton.next_power_of_2(token_batch)}
    source = ASTSource(fn=vlm_pruner_triton._resolve_window_kernel, signature=signature,
                       constexprs=constants)
    kernel = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                            options={"num_warps": vlm_pruner_triton.NUM_WARPS,
                                     "enable_fp_fusion": False})
    ptx = kernel.asm["ptx"]
    assert kernel.asm["cubin"]
    assert "sqrt.rn.f32" in ptx and "sqrt.approx" not in ptx
    assert "fma.rn.f32" not in ptx


@pytest.mark.skipif(INTERPRETED, reason="already running under the interpreter")
def test_interpreter_run():
    """Runs the torch-path tests of test_vlm_pruner.py and the window comparison below
    with the kernel under TRITON_INTERPRET=1; none may be skipped."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "torch or window",
               "tests/pruning/test_vlm_pruner.py", "tests/pruning/test_vlm_pruner_triton.py"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "passed" in summary and "skipped" not in summary, summary


def window_inputs(seed: int, length: int, token_batch: int):
    """A window of similar candidates (cosine ~0.6-1) on a small video grid, with scores
    rounded to 1/64 so that ties are common, and a threshold that accepts some."""
    g = torch.Generator().manual_seed(seed)
    unit = F.normalize(torch.randn(length, 8, generator=g) + 1.5 * torch.randn(8, generator=g), dim=1)
    pos = torch.stack([torch.randint(0, 4, (length,), generator=g) * 1.5,  # temporal_scale 1.5
                       torch.randint(0, 12, (length,), generator=g),
                       torch.randint(0, 12, (length,), generator=g)], dim=1).float()
    max_sim = (torch.rand(length, generator=g) * 0.6 + 0.4).mul(64).round().div(64)
    min_dist = torch.randint(1, 6, (length,), generator=g).float().sqrt()
    return unit @ unit.T, pos, max_sim, min_dist


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("token_batch", [1, 3, 16, 64])
@pytest.mark.parametrize("size", ["one", "short", "window"])
def test_window_kernel_matches_torch_resolver(seed, token_batch, size):
    """Same accepted candidates as ``_resolve_window_torch``, over partial last batches,
    capacity cuts (room smaller than a batch's acceptances), windows whose room outlasts
    them, and tied scores."""
    if not vlm_pruner_triton.usable(torch.device("cpu"), token_batch):
        pytest.skip("runs under TRITON_INTERPRET=1 (see the test above)")
    length = {"one": 1, "short": 37, "window": vlm_pruner_triton.window_length(token_batch)}[size]
    sim, pos, max_sim, min_dist = window_inputs(seed, length, token_batch)
    scale = 0.5 / math.sqrt(4 ** 2 + 2 * 12 ** 2)
    tau = vlm_pruner.float32_threshold(0.8 + 0.1 * seed)
    for room in (1, 5, min(length, 40)):  # at most 40 steps: the interpreter is slow
        args = (sim, pos, max_sim, min_dist, room, tau, scale, token_batch)
        kernel = vlm_pruner_triton.resolve_window(*args)
        reference = vlm_pruner._resolve_window_torch(*args)
        assert torch.equal(kernel, reference), (room, kernel.nonzero().squeeze(1).tolist(),
                                                reference.nonzero().squeeze(1).tolist())
        assert 0 < int(kernel.sum()) <= room or not ((1 + scale * min_dist) * max_sim < tau).any()
