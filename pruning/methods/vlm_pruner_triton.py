"""VLM-Pruner's parallel greedy on the GPU: a window of candidate batches per kernel.

Stage 2 of the spec (../shared/spec/vlm-pruner.md) walks a round's ranked candidates in
batches of B, each re-scored against the selection grown by the batches before it. That
is sequential, and on a GPU a step of a few small torch kernels plus a host sync per
accepting batch costs ~0.1 ms: at N = 16384 (about 600 accepting batches) most of the
selection's time. Here one kernel program resolves a whole *window* of up to ~1024
consecutive candidates, keeping the window's BSS ingredients in registers:

    repeat:
        bss = (1 + scale * min_dist) * max_sim          (every lane of the window)
        first = first lane at or after `start` with bss < tau; none -> done
        the batch holding `first` accepts its members with bss < tau (at most `room`:
        the lowest bss, lower lane on a tie); batches before it accept nothing
        max_sim / min_dist of every lane <- the accepted rows of the window's
        similarity matrix / their grid distances
        start <- end of that batch

Only batches that accept something cost a step, exactly as the torch path's jump does.
The host side (``vlm_pruner._SelectionState.resolve``) builds the window's similarity
matrix with one matmul and applies the accepted tokens to every other token afterwards.

The arithmetic is that of the torch path, in float32 without fused multiply-adds and
with a correctly rounded square root, so both make the same decisions on the same
numbers; ``tests/pruning/test_vlm_pruner_triton.py`` runs the kernel under Triton's
interpreter (``TRITON_INTERPRET=1``, on the CPU) against the torch resolver, and
compiles it for sm_80 and sm_90 without a GPU.
"""

from __future__ import annotations

import contextlib
import functools

import torch

try:  # Triton ships with torch's Linux x86-64 wheels; elsewhere the torch resolver runs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the platform
    triton = None

# Largest candidate batch the kernel takes (its (batch, window) tiles live in registers);
# larger batches use the torch resolver.
MAX_BATCH = 64
# Candidates per window (rounded down to a whole number of batches).
WINDOW = 1024
NUM_WARPS = 16


def window_length(token_batch: int) -> int:
    """Candidates resolved per window: whole batches, about ``WINDOW`` tokens."""
    return token_batch * max(1, WINDOW // token_batch)


def usable(device: torch.device, token_batch: int) -> bool:
    """Whether the kernel runs for tensors on ``device``: a GPU that Triton supports (or
    Triton's interpreter, which runs it on the CPU for tests), batches of at most
    ``MAX_BATCH``."""
    if triton is None or token_batch > MAX_BATCH:
        return False
    if triton.knobs.runtime.interpret:
        return True
    return device.type == "cuda" and _supported_gpu(device)


@functools.cache
def _supported_gpu(device: torch.device) -> bool:
    """Triton's GPUs: NVIDIA from compute capability 8.0 (Ampere) on, or ROCm."""
    return torch.version.hip is not None or torch.cuda.get_device_capability(device) >= (8, 0)


if triton is not None:

    @triton.jit(do_not_specialize=["length", "room"])
    def _resolve_window_kernel(sim_ptr, pos_ptr, max_sim_ptr, min_dist_ptr, accept_ptr,
                               length, room, threshold, scale,
                               BATCH: tl.constexpr, BLOCK: tl.constexpr, BLOCK_BATCH: tl.constexpr):
        """One program per window. sim: (length, length) row-major; pos: (length, 3);
        max_sim, min_dist: (length,) against the selection at the window's start;
        accept: (length,) int8 zeros, set to 1 where a candidate is accepted."""
        lanes = tl.arange(0, BLOCK)
        valid = lanes < length
        slots = tl.arange(0, BLOCK_BATCH)
        max_sim = tl.load(max_sim_ptr + lanes, mask=valid, other=0.0)
        min_dist = tl.load(min_dist_ptr + lanes, mask=valid, other=0.0)
        lane_t = tl.load(pos_ptr + lanes * 3, mask=valid, other=0.0)
        lane_y = tl.load(pos_ptr + lanes * 3 + 1, mask=valid, other=0.0)
        lane_x = tl.load(pos_ptr + lanes * 3 + 2, mask=valid, other=0.0)
        start = tl.zeros((), dtype=tl.int32)
        while (start < length) & (room > 0):
            bss = (1.0 + scale * min_dist) * max_sim
            hit = valid & (lanes >= start) & (bss < threshold)
            first = tl.min(tl.where(hit, lanes, BLOCK), axis=0)  # BLOCK: no hit
            lo = tl.where(first < length, (first // BATCH) * BATCH, length)  # length: no hit
            members = lo + slots
            member_ok = (slots < BATCH) & (members < length)
            # The members' scores, picked out of the lanes (registers cannot be indexed).
            picked = members[:, None] == lanes[None, :]  # (BLOCK_BATCH, BLOCK)
            member_bss = tl.max(tl.where(picked, bss[None, :], -float("inf")), axis=1)
            accept = member_ok & (member_bss < threshold)
            # Over capacity: keep the `room` lowest scores, the lower lane on a tie.
            before = accept[None, :] & ((member_bss[None, :] < member_bss[:, None])
                                        | ((member_bss[None, :] == member_bss[:, None])
                                           & (slots[None, :] < slots[:, None])))
            rank = tl.sum(before.to(tl.int32), axis=1)
            accept = accept & (rank < room)
            taken = tl.sum(accept.to(tl.int32), axis=0)
            tl.store(accept_ptr + members, accept.to(tl.int8), mask=accept)
            # Every lane against the accepted members: similarity rows and grid distances.
            rows = accept[:, None] & valid[None, :]
            sim = tl.load(sim_ptr + members[:, None] * length + lanes[None, :], mask=rows,
                          other=-float("inf"))
            max_sim = tl.maximum(max_sim, tl.max(sim, axis=0))
            dt = tl.load(pos_ptr + members * 3, mask=accept, other=0.0)[:, None] - lane_t[None, :]
            dy = tl.load(pos_ptr + members * 3 + 1, mask=accept, other=0.0)[:, None] - lane_y[None, :]
            dx = tl.load(pos_ptr + members * 3 + 2, mask=accept, other=0.0)[:, None] - lane_x[None, :]
            squared = tl.where(rows, dt * dt + dy * dy + dx * dx, float("inf"))
            min_dist = tl.minimum(min_dist, tl.sqrt_rn(tl.min(squared, axis=0)))
            room = room - taken
            start = tl.minimum(lo + BATCH, length)


def resolve_window(sim: torch.Tensor, pos: torch.Tensor, max_sim: torch.Tensor,
                   min_dist: torch.Tensor, room: int, threshold: float, scale: float,
                   token_batch: int) -> torch.Tensor:
    """Resolve one window with the kernel; same contract as
    ``vlm_pruner._resolve_window_torch``.

    Args:
        sim: (L, L) float32 similarities of the window's candidates (ranked order).
        pos: (L, 3) float32 positions; max_sim, min_dist: (L,) against the selection.
        room: tokens still to select; threshold: float32 bound (accept bss < threshold).
        scale: lambda * nf; token_batch: B (the window starts at a batch boundary).
    Returns:
        (L,) bool, True for the accepted candidates.
    """
    length = sim.shape[0]
    # One block size per batch size (not per window length): one compilation serves all.
    block = triton.next_power_of_2(window_length(token_batch))
    accept = torch.zeros(length, dtype=torch.int8, device=sim.device)
    with torch.cuda.device(sim.device) if sim.is_cuda else contextlib.nullcontext():
        _resolve_window_kernel[(1,)](  # launched on the current device: the tensors' one
            sim.contiguous(), pos.contiguous(), max_sim.contiguous(), min_dist.contiguous(),
            accept, length, room, threshold, scale,
            BATCH=token_batch, BLOCK=block, BLOCK_BATCH=triton.next_power_of_2(token_batch),
            num_warps=NUM_WARPS, enable_fp_fusion=False)
    return accept.bool()
