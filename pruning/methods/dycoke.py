"""DyCoke (Tao et al., CVPR 2025): temporal token merging across neighbouring frames.

Follows the authors' ``dycole_ttm`` (github.com/KD-TAO/DyCoke, ``llava/model/llava_arch.py``),
applied to the projector's output before the LLM. Frames are taken in pairs (0, 1),
(2, 3), ...: the second of each pair keeps only its tokens least similar (cosine, at the
same grid cell) to the first. Then in windows of four frames (0..3, 4..7, ...) the third
frame is compared with the first in the same way; so in a window frame 0 is kept whole,
frame 1 and frame 2 are pruned against frame 0, and frame 3 against frame 2. The
authors' window loop is ``range(0, T - 4, 4)``, which skips the last full window (its
third frame keeps its pairing with nothing and stays whole); :func:`reference_frames`
reproduces that.

Deliberate deviations:

- counts: the span keeps exactly R (``pruning_rate``). Frames without a reference keep
  their tokens first; the rest of R is shared evenly by the referenced frames (earlier
  frames take the remainder), each keeping its least-similar tokens. The authors keep
  ``int((1 - K) * tokens_per_frame)`` per referenced frame with the merging ratio K
  (default 0.7): the same tokens whenever R equals their count.
- when R is smaller than the unreferenced frames' tokens (harsh rates, images, single
  frames), the referenced frames keep nothing and the unreferenced frames share R
  evenly, each keeping its tokens least similar to their left neighbour in the row (the
  token above for the first column; the frame's first token is kept first). The
  authors have no such case: their count is fixed by K.
- an odd last frame: the authors' pair loop never appends it, so their output drops it
  altogether (a defect); here it has no reference and counts as a frame kept whole.
- ties go to the lower index (their ``topk`` leaves ties to the kernel); similarities in
  float32.
- the second stage of DyCoke, dynamic pruning of the KV cache during decoding, is not
  implemented: decoding attends to every kept token.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Selection, register

# No configurable parameters beyond num_retain: the merging ratio is the pruning rate.
PARAMS: dict = {}


def reference_frames(num_frames: int) -> list[Optional[int]]:
    """Each frame's reference frame in the authors' scheme, or None for a frame kept whole.

    Example: 8 frames -> [None, 0, 0, 2, None, 4, None, 6] (the last window's third frame
    keeps no reference: their window loop stops before it); 3 frames -> [None, 0, None].
    """
    refs: list[Optional[int]] = [None] * num_frames
    for t in range(0, num_frames - 1, 2):
        refs[t + 1] = t
    for t in range(0, num_frames - 4, 4):
        refs[t + 2] = t
    return refs


@register("dycoke", signals=("embeddings", "grid"), default_layer=0, params=PARAMS)
def select(embeddings: torch.Tensor, grid: tuple[int, int, int], num_retain: int) -> Selection:
    """Keep R tokens: whole reference frames first, then each referenced frame's tokens
    least similar to its reference frame at the same cell.

    Args:
        embeddings: (N, D) the span's visual embeddings, N = T * H * W in raster order.
        grid: (T, H, W) the span's token grid.
        num_retain: R.
    Returns:
        Selection with ``keep`` (min(R, N),) ascending.

    Example: T=2, H=1, W=2, frame 0 = [a, b], frame 1 = [a, c] with c orthogonal to b,
    R=3 -> frame 0 whole (0, 1), then frame 1's cell 1 (similarity 0 < 1) -> keep [0, 1, 3].
    """
    checks.matrix("embeddings", embeddings)
    checks.positive_int("num_retain", num_retain)
    frames, rows, cols = (int(v) for v in grid)
    n = embeddings.shape[0]
    if frames * rows * cols != n:
        raise ValueError(f"grid {tuple(grid)} covers {frames * rows * cols} tokens but the span has {n}")
    count = min(num_retain, n)
    if count == n:
        return Selection(torch.arange(n, device=embeddings.device))
    per_frame = rows * cols
    unit = F.normalize(embeddings.float(), dim=1, eps=1e-8).view(frames, per_frame, -1)
    refs = reference_frames(frames)
    whole = [t for t in range(frames) if refs[t] is None]
    referenced = [t for t in range(frames) if refs[t] is not None]
    if count < len(whole) * per_frame:
        # Too few for the reference frames: they share R, ranked within the frame.
        quotas = _shares(count, len(whole))
        scores = {t: _left_neighbour_similarity(unit[t], rows, cols) for t in whole}
        chosen = [t * per_frame + _least(scores[t], q) for t, q in zip(whole, quotas)]
    else:
        quotas = _shares(count - len(whole) * per_frame, len(referenced))
        chosen = [torch.arange(t * per_frame, (t + 1) * per_frame, device=embeddings.device) for t in whole]
        for t, quota in zip(referenced, quotas):
            similarity = (unit[t] * unit[refs[t]]).sum(dim=1)  # (H*W,) same cell, cosine
            chosen.append(t * per_frame + _least(similarity, quota))
    return Selection(torch.sort(torch.cat(chosen)).values)


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal counts, earlier parts taking the remainder."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _least(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` smallest scores, ties to the lower index."""
    order = torch.sort(scores, stable=True).indices
    return order[:count]


def _left_neighbour_similarity(unit: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(H*W,) each cell's cosine with the cell to its left (above, in the first column);
    the first cell scores -inf so that it is kept first."""
    cells = unit.view(rows, cols, -1)
    score = torch.empty(rows, cols, device=unit.device)
    score[:, 1:] = (cells[:, 1:] * cells[:, :-1]).sum(dim=-1)
    score[1:, 0] = (cells[1:, 0] * cells[:-1, 0]).sum(dim=-1)
    score[0, 0] = -float("inf")
    return score.view(-1)
