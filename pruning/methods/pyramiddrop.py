"""PyramidDrop (Xing et al., CVPR 2025): drop visual tokens stage by stage, ranked by attention.

Follows the authors' ``pdrop_rank_drop`` (github.com/Cooperx521/PyramidDrop,
``llava/model/modeling_llama_pdrop.py``): the LLM is split into stages at
``layer_list`` (LLaVA-1.5-7B: 8, 16, 24); at the start of each stage the states entering
its first layer go through *that* layer's input norm and query/key projections (with
rotary), the last instruction token's attention over the sequence is softmaxed, averaged
over heads and read at the visual tokens, and the highest-ranked survivors are kept.
Each stage keeps lambda = 0.5 of what reaches it (``image_token_ratio_list``
1, 0.5, 0.25, 0.125). Decoding is unpruned beyond the prefill's drops, as theirs.

Here one call is one stage: the engine runs it before each layer of the config's
``stages`` (default the authors' 8, 16, 24) on the survivors of the previous stages,
with the ``layer_attention`` signal. Deliberate deviations:

- counts: the stage keeps R from the config (``pruning_rate`` split geometrically over
  the stages, so 0.875 over three stages is their lambda = 0.5; or explicit per-stage
  rates), rounded; the authors floor ``N * ratio`` (equal whenever it is whole);
- ties go to the lower index (their ``topk`` leaves ties to the kernel), scores in float32
  (theirs in the model's dtype);
- the query is the last prompt token, as for FastV (their ``prompt_len + image_tokens - 1``
  is the same token for a single image; we rank every span of a sample on its own);
- positions: after each drop the authors renumber the sequence (``arange`` of the new
  length); we keep the original position ids by default, ``positions: renumbered``
  reproduces theirs.
"""

from __future__ import annotations

import torch

from pruning.methods import fastv
from pruning.methods.registry import Selection, register

# No configurable parameters beyond num_retain and the stages.
PARAMS: dict = {}


@register("pyramiddrop", signals=("layer_attention",), default_layer=8, min_layer=1, params=PARAMS,
          default_stages=(8, 16, 24))
def select(layer_attention: torch.Tensor, num_retain: int) -> Selection:
    """Keep the R survivors the last prompt token attends to most at this stage's layer.

    Args:
        layer_attention: (heads, N) or (N,) attention of the last prompt token to the span's
            tokens, computed with the stage layer's own projections on its input.
        num_retain: R for this stage.
    Returns:
        Selection with ``keep`` (min(R, N),) ascending; ties go to the lower index.

    Example: attention [[.1, .4, .2, .3], [.3, .2, .2, .3]], R=2 -> means [.2, .3, .2, .3]
    -> keep [1, 3].
    """
    return fastv.select(layer_attention, num_retain)
