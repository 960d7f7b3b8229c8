"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision
Language Models", CVPR 2025, arXiv 2412.04467): dominant tokens plus merged contextual ones.

Follows the authors' code (github.com/dvlab-research/VisionZip), file
``visionzip/clip_encoder.py``, ``CLIPVisionTower_VisionZip.forward``, with the
attention and keys from ``visionzip/utils.py`` ``CLIPAttention_forward`` /
``CLIP_EncoderLayer_forward`` (layer -2 of CLIP, the one LLaVA takes its features from).

Algorithm, for one span of N tokens and R = min(num_retain, N) kept:

1. C = round(R * contextual_ratio) contextual tokens, D = R - C dominant tokens
   (authors' default 54 + 10 of 64, 108 + 20 of 128, 162 + 30 of 192: ratio 10/64).
2. Dominant: the D tokens with the highest ``vision_attention`` (CLS attention, heads
   averaged; ties to the lower index).
3. The M = N - D other tokens, in index order. Targets: every ``step``-th of them,
   ``step = max(1, M // C)``, the first C. Each non-target joins the target whose key
   (``vision_keys``, L2-normalised) has the highest cosine with its own (ties to the
   lower target). A target's new state is its own state **plus** the mean of the states
   that joined it (the authors' ``target_hidden + aggregated_hidden``; the paper's text
   says "averaged", the code adds; we follow the code). A target nothing joined keeps
   its state.
4. Keep the dominant tokens and the targets; ``hidden_states`` carries the merged states.

Example (N = 6, R = 3, contextual_ratio = 1/3 -> C = 1, D = 2): attention
[.1, .5, .2, .4, .0, .3] -> dominant {1, 3}; others [0, 2, 4, 5], step 4, target 0;
2, 4, 5 join it -> keep [0, 1, 3], state of 0 = h0 + (h2 + h4 + h5) / 3.

Deliberate deviations from the authors' code:
- Where: they select on CLIP's output before the projector and merge the contextual
  tokens in the vision encoder's feature space; we run at layer 0 on the LLM-side
  tokens (``hidden_states`` = the visual embeddings after the projector) and merge
  those, and a merged token takes its target's position (kept tokens keep positions).
- Count: they always keep CLIP's CLS token as one of the dominant tokens (54 = CLS +
  53 patches); CLS has no LLM token here, so its slot goes to one more patch: exactly
  R = D + C patch tokens. They fail on C = 0 (``M // 0``); we keep D = R dominant only.
- Keys: their metric is the layer's keys averaged over heads; ours (the
  ``vision_keys`` signal) has the heads concatenated. With one head both are equal.
- Ties: their ``topk`` leaves ties unspecified; ours go to the lower index. Cosine
  uses ``F.normalize`` (eps 1e-12) where they divide by the norm (NaN for a zero key).
- Computed in float32 whatever the model's dtype, deterministically.
- Other families (their code covers CLIP in LLaVA-1.5 / LLaVA-NeXT only): SigLIP
  (LLaVA-OneVision) and the Qwen vision towers have no CLS token; the mean attention a
  patch receives over all queries of its image (frame) stands in for the CLS row, and
  Qwen's 2x2 merged tokens sum their patches' attention and concatenate their keys
  (``pruning.vision`` gives the layer per family and the pooling). Each OneVision base
  tile, high-resolution grid and video is its own span with its own R (their LLaVA-NeXT
  path selects per 336px crop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pruning.methods import checks
from pruning.methods.registry import Param, Selection, register


PARAMS = {
    "contextual_ratio": Param(float, 10 / 64, "share of the kept tokens that are merged contextual tokens "
                              "(authors: 10 of 64)", 0.0, 1.0),
}


@register("visionzip", signals=("vision_attention", "vision_keys", "hidden_states"), default_layer=0,
          params=PARAMS)
def select(vision_attention: torch.Tensor, vision_keys: torch.Tensor, hidden_states: torch.Tensor,
           num_retain: int, *, contextual_ratio: float = 10 / 64) -> Selection:
    """Keep D dominant tokens and C merged contextual tokens, D + C = min(R, N).

    Args:
        vision_attention: (N,) attention each token receives in the vision encoder.
        vision_keys: (N, Dk) the tokens' keys in that layer.
        hidden_states: (N, D) the tokens' states (layer 0: the visual embeddings).
        num_retain: R.
        contextual_ratio: C / R, rounded half up.
    Returns:
        Selection with ``keep`` ascending and, when anything was merged, the kept
        tokens' float32 states in ``keep`` order.
    """
    checks.positive_int("num_retain", num_retain)
    ratio = checks.in_range("contextual_ratio", contextual_ratio, 0.0, 1.0)
    if not isinstance(vision_attention, torch.Tensor) or vision_attention.dim() != 1:
        raise ValueError("vision_attention must be a 1-D tensor (N,), got "
                         f"{getattr(vision_attention, 'shape', type(vision_attention).__name__)}")
    checks.matrix("vision_attention", vision_attention[:, None])
    n = vision_attention.shape[0]
    checks.matrix("vision_keys", vision_keys, rows=n)
    checks.matrix("hidden_states", hidden_states, rows=n)
    device = hidden_states.device
    checks.same_device("vision_attention", vision_attention, device)
    checks.same_device("vision_keys", vision_keys, device)
    count = min(num_retain, n)
    if count == n:
        return Selection(torch.arange(n, device=device))
    contextual = math.floor(count * ratio + 0.5)
    dominant = count - contextual

    ranked = torch.sort(vision_attention.float(), descending=True, stable=True).indices
    is_dominant = torch.zeros(n, dtype=torch.bool, device=device)
    is_dominant[ranked[:dominant]] = True
    keep, states = is_dominant.clone(), hidden_states.float().clone()  # (N,), (N, D)
    if contextual:
        rest = (~is_dominant).nonzero().squeeze(1)  # (M,) index order
        step = max(1, rest.numel() // contextual)
        is_target = torch.zeros(rest.numel(), dtype=torch.bool, device=device)
        is_target[torch.arange(0, rest.numel(), step, device=device)[:contextual]] = True
        targets, members = rest[is_target], rest[~is_target]  # (C,), (M - C,)
        unit = F.normalize(vision_keys.float(), dim=1)  # (N, Dk)
        joins = torch.argmax(unit[members] @ unit[targets].T, dim=1)  # (M - C,) first max wins
        sums = torch.zeros(contextual, states.shape[1], device=device).index_add_(0, joins, states[members])
        sizes = torch.bincount(joins, minlength=contextual).clamp_min(1)  # (C,)
        states[targets] += sums / sizes[:, None]
        keep[targets] = True
    kept = keep.nonzero().squeeze(1)
    return Selection(kept, states[kept] if contextual else None)
