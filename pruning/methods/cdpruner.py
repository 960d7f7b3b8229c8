"""CDPruner (Zhang et al., 2025): a conditional determinantal point process over the
visual tokens, conditioned on their relevance to the instruction.

Follows the authors' ``encode_images`` (github.com/Theia-4869/CDPruner,
``llava/model/llava_arch.py``), before the LLM (layer 0):

- similarity: cosine between the span's visual tokens after the projector, float32;
- relevance: the mean over instruction tokens of the *negated* cosine between each
  visual token and each instruction token, min-max normalised over the span as
  ``(r - min + 1e-6) / (max - min)`` (their sign and epsilon);
- kernel ``L = diag(r) S diag(r)``, and the fast greedy MAP inference of Chen et al.
  (2018): repeatedly take the token of largest remaining marginal gain ``d_j^2``,
  update every ``d_i^2`` by the new Cholesky row, R times.

Deliberate deviations:

- the relevance space: the authors embed the instruction with CLIP's text tower and the
  image with CLIP's vision projection (LLaVA); those towers are not part of the Qwen-VL or
  LLaVA-OneVision checkpoints, so here both sides are in the LLM's input space: the
  visual tokens after the projector and the input embeddings of the prompt's text tokens
  after the span (``text_hidden_states`` at layer 0: the question and the chat
  template's closing tokens). No text after the span gives every token relevance 1
  (the unconditional DPP).
- exhausted gains: once the kernel's rank is spent (R above its rank, e.g. R > D or
  duplicated tokens), every remaining gain is zero up to rounding and their ``argmax``
  (and ``sqrt`` of a negative rounding error) picks arbitrarily or produces NaN; here the
  remaining picks go to the highest relevance, ties to the lower index.
- batching: the authors normalise relevance by the min and max over the whole batch of
  images; here over the span, so that a sample's selection does not depend on its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Selection, register

# No configurable parameters beyond num_retain and layer.
PARAMS: dict = {}

# A marginal gain at or below this (relative to the largest diagonal entry) is exhausted.
_GAIN_FLOOR = 1e-6


@register("cdpruner", signals=("embeddings", "text_hidden_states"), default_layer=0, params=PARAMS)
def select(embeddings: torch.Tensor, text_hidden_states: torch.Tensor, num_retain: int) -> Selection:
    """Keep the R tokens of the greedy MAP of the relevance-conditioned DPP.

    Args:
        embeddings: (N, D) the span's visual tokens after the projector.
        text_hidden_states: (M, D) the instruction's token embeddings (M may be 0).
        num_retain: R.
    Returns:
        Selection with ``keep`` (min(R, N),) ascending.

    Example: embeddings [[1, 0], [0.6, 0.8], [0, 1]], no text, R=2 -> all relevances 1; the
    first pick is token 0 (gains tie at 1), then token 2 (gain 1 against token 1's
    1 - 0.6^2 = 0.64) -> keep [0, 2].
    """
    checks.matrix("embeddings", embeddings)
    checks.positive_int("num_retain", num_retain)
    n = embeddings.shape[0]
    count = min(num_retain, n)
    if count == n:
        return Selection(torch.arange(n, device=embeddings.device))
    unit = F.normalize(embeddings.float(), dim=1, eps=1e-8)  # (N, D)
    similarity = unit @ unit.T  # (N, N)
    relevance = instruction_relevance(unit, text_hidden_states)  # (N,)
    kernel = relevance[:, None] * similarity * relevance[None, :]
    return Selection(torch.sort(greedy_map(kernel, relevance, count)).values)


def instruction_relevance(unit: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(N,) the authors' normalised negated mean cosine of each visual token (rows of
    ``unit``, unit length) to the text tokens; ones when there is no text."""
    if text.shape[0] == 0:
        return torch.ones(unit.shape[0], device=unit.device)
    text_unit = F.normalize(text.float(), dim=1, eps=1e-8)
    relevance = -(unit @ text_unit.T).mean(dim=1)
    low, high = relevance.min(), relevance.max()
    if high - low <= 0:
        return torch.ones_like(relevance)
    return (relevance - low + 1e-6) / (high - low)


def greedy_map(kernel: torch.Tensor, fallback: torch.Tensor, count: int) -> torch.Tensor:
    """Fast greedy MAP inference of a DPP with kernel (N, N): ``count`` indices in pick
    order. When every remaining gain is exhausted, the rest go by ``fallback`` (N,),
    highest first."""
    n = kernel.shape[0]
    gains = torch.diagonal(kernel).clone()  # d_i^2
    rows = torch.zeros(count, n, device=kernel.device)  # the Cholesky rows c_i
    picked = torch.zeros(n, dtype=torch.bool, device=kernel.device)
    chosen = torch.empty(count, dtype=torch.long, device=kernel.device)
    floor = _GAIN_FLOOR * float(gains.max().clamp_min(1e-30))
    for step in range(count):
        j = int(torch.argmax(gains))
        if float(gains[j]) <= floor:
            rest = torch.where(picked, torch.full_like(fallback, -float("inf")), fallback.float())
            order = torch.sort(rest, descending=True, stable=True).indices[:count - step]
            chosen[step:] = order
            return chosen
        chosen[step] = j
        picked[j] = True
        e = (kernel[j] - rows[:step, j] @ rows[:step]) / gains[j].sqrt()
        rows[step] = e
        gains -= e.square()
        gains[picked] = -float("inf")
    return chosen
