"""Theoretical prefill FLOPs of a VLM, before and after visual token pruning.

Counting rules (the usual ones in token-pruning papers):

- one multiply-add is 2 FLOPs; a (n x a) @ (a x b) product is ``2 * n * a * b``;
- counted: every linear layer, the patch-embedding convolution, and the two attention
  products (scores ``Q K^T`` and the weighted sum ``A V``);
- not counted: norms, activations, softmax, rotary embeddings, residual adds, biases,
  position-embedding interpolation (each O(n * d), well under 1% of a layer);
- LLM attention is causal: a sequence of n tokens has ``n * (n + 1) / 2`` query-key
  pairs (a kernel that skips the masked half does this much work). Vision attention is
  bidirectional: ``s * s`` pairs per image of s patches;
- prefill ends in one next token, so the LM head runs on the last position only.

Reads ``config.get_text_config()`` and ``config.vision_config`` of Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, LLaVA-1.5 (CLIP + Llama) and LLaVA-OneVision (SigLIP + Qwen2); every supported
LLM has a gated (SwiGLU) MLP of three matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

# LLM families whose decoder layers are: attention (q, k, v, o) + gated MLP (gate, up, down).
_DENSE_SWIGLU_LLMS = ("llama", "qwen2", "qwen2_vl_text", "qwen2_5_vl_text", "qwen3", "qwen3_vl_text")


def llm_prefill_flops(text_config, seq_len_per_layer: Sequence[int]) -> float:
    """FLOPs of one prefill through the LLM when decoder layer i sees ``seq_len_per_layer[i]`` tokens.

    ``text_config`` may also be a multimodal config (its text config is used). Per layer
    with n tokens, d = hidden_size, H query heads, G key-value heads (GQA), head dim h, MLP
    width I::

        projections  2n * d * (2 * H * h + 2 * G * h)       q and o; k and v
        attention    2 * 2 * n(n+1)/2 * H * h               causal Q K^T and A V
        mlp          3 * 2n * d * I                          gate, up, down

    plus ``2 * d * vocab_size`` for the LM head on the last token.
    """
    text = _text_config(text_config)
    lengths = list(seq_len_per_layer)
    if len(lengths) != text.num_hidden_layers:
        raise ValueError(f"seq_len_per_layer must have one entry per decoder layer "
                         f"({text.num_hidden_layers}), got {len(lengths)}")
    if any(n < 0 for n in lengths):
        raise ValueError(f"seq_len_per_layer entries must be >= 0, got {lengths}")
    return sum(decoder_layer_flops(text, n) for n in lengths) + 2.0 * text.hidden_size * text.vocab_size


def decoder_layer_flops(text_config, n: int) -> float:
    """FLOPs of one decoder layer on n tokens (see :func:`llm_prefill_flops`)."""
    text = _text_config(text_config)
    d, inter = text.hidden_size, text.intermediate_size
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or d // heads
    projections = 2.0 * n * d * (2 * heads + 2 * kv_heads) * head_dim
    attention = 4.0 * (n * (n + 1) / 2) * heads * head_dim
    mlp = 3 * 2.0 * n * d * inter
    return projections + attention + mlp


@dataclass(frozen=True)
class VisionShape:
    """What the vision FLOPs depend on, read from one family's vision config.

    width, depth:         the transformer blocks (attention q/k/v/o of width x width).
    mlp_matrices:         width x mlp_width matrices per block (2 plain, 3 gated).
    patch_inputs:         values one patch embedding reads (channels * frames * patch^2).
    merge:                patches per LLM token (Qwen: spatial_merge_size^2; LLaVA: 1).
    extra_per_image:      tokens the tower adds per image (CLIP's class token).
    head_flops_per_token: the merger / projector (incl. Qwen3-VL's DeepStack mergers),
                          per LLM token.
    window_patches:       patches per attention window (Qwen2.5-VL), 0 = no windows.
    windowed_blocks:      blocks that attend within windows only.
    """

    width: int
    depth: int
    mlp_width: int
    mlp_matrices: int
    patch_inputs: int
    merge: int
    extra_per_image: int
    head_flops_per_token: float
    window_patches: int = 0
    windowed_blocks: int = 0


def vision_shape(config) -> VisionShape:
    """The :class:`VisionShape` of a multimodal transformers config."""
    vision = getattr(config, "vision_config", None)
    kind = getattr(vision, "model_type", None)
    llm_width = _text_config(config).hidden_size
    if kind in ("qwen2_vl_vision", "qwen2_5_vl_vision", "qwen3_vl_vision"):
        merge = vision.spatial_merge_size ** 2
        patch_inputs = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
        if kind == "qwen2_vl_vision":  # embed_dim wide; hidden_size is the merger's output
            width, out = vision.embed_dim, vision.hidden_size
            mlp_width, mlp_matrices = width * vision.mlp_ratio, 2
        else:
            width, mlp_width, out = vision.hidden_size, vision.intermediate_size, vision.out_hidden_size
            mlp_matrices = 3 if kind == "qwen2_5_vl_vision" else 2
        # Merger: (merge * width) -> (merge * width) -> out, once per LLM token; Qwen3-VL
        # runs one more merger per DeepStack tap.
        mergers = 1 + len(getattr(vision, "deepstack_visual_indexes", None) or ())
        context = merge * width
        head = mergers * 2.0 * (context * context + context * out)
        window, windowed = 0, 0
        if kind == "qwen2_5_vl_vision":  # windows everywhere but the full-attention blocks
            window = (vision.window_size // vision.patch_size) ** 2  # window_size is in pixels
            windowed = vision.depth - len(vision.fullatt_block_indexes)
        return VisionShape(width, vision.depth, mlp_width, mlp_matrices, patch_inputs, merge, 0, head,
                           window, windowed)
    if kind in ("clip_vision_model", "siglip_vision_model"):
        layers = config.vision_feature_layer
        num_feature_layers = 1 if isinstance(layers, int) else len(layers)
        # Projector: (num_feature_layers * width) -> llm_width -> llm_width, per patch.
        head = 2.0 * (num_feature_layers * vision.hidden_size * llm_width + llm_width * llm_width)
        return VisionShape(vision.hidden_size, vision.num_hidden_layers, vision.intermediate_size, 2,
                           vision.num_channels * vision.patch_size ** 2, 1,
                           1 if kind == "clip_vision_model" else 0, head)
    raise ValueError(f"unsupported vision tower {kind!r}; supported: qwen2_vl_vision, qwen2_5_vl_vision, "
                     "qwen3_vl_vision, clip_vision_model, siglip_vision_model")


def vision_flops(config, num_patches: int, *, num_images: int = 1) -> float:
    """FLOPs of the vision encoder and its merger/projector on ``num_patches`` patches.

    num_patches: patches entering the tower, all images together (Qwen: the sum of
        ``t * h * w`` over ``image_grid_thw``; LLaVA-1.5: 576 per image; LLaVA-OneVision:
        729 per 384-px tile, each tile counted as an image).
    num_images: attention runs within each image; patches are split evenly over them.

    The tower runs all of its layers (LLaVA selects layer -2, but transformers computes
    the last layer too). Qwen2.5-VL's windowed blocks count ``min(window, s)`` keys per
    patch: exact when the image's patch grid divides into whole windows, an upper bound
    otherwise (edge windows are smaller).
    """
    if num_patches < 0 or num_images < 1:
        raise ValueError(f"num_patches must be >= 0 and num_images >= 1, got {num_patches}, {num_images}")
    shape = vision_shape(config)
    per_image = num_patches / num_images + shape.extra_per_image
    tokens = per_image * num_images
    w = shape.width
    embed = 2.0 * num_patches * shape.patch_inputs * w
    linear = 2.0 * tokens * (4 * w * w + shape.mlp_matrices * w * shape.mlp_width)
    attention = 4.0 * num_images * per_image ** 2 * w
    windowed = 4.0 * num_images * per_image * min(shape.window_patches, per_image) * w
    full_blocks = shape.depth - shape.windowed_blocks
    blocks = shape.depth * linear + full_blocks * attention + shape.windowed_blocks * windowed
    head = num_patches / shape.merge * shape.head_flops_per_token
    return embed + blocks + head


def prefill_flops(config, *, seq_len: int, visual_tokens: int, kept_visual_tokens: int, layer: int,
                  num_patches: Optional[int] = None, num_images: int = 1,
                  stages: Optional[Sequence[tuple[int, int]]] = None) -> dict[str, float]:
    """Prefill FLOPs of one sample, unpruned and pruned before decoder layer ``layer``.

    seq_len:             prompt length in LLM tokens, visual tokens included.
    visual_tokens:       N, visual tokens in the prompt (all spans).
    kept_visual_tokens:  R, visual tokens left after pruning (all spans).
    layer:               K; layers < K see seq_len tokens, layers >= K see
                         ``seq_len - (N - R)`` (K = 0: pruned on the visual embeddings).
    num_patches:         patches entering the vision tower (see :func:`vision_flops`);
                         None: ``N * merge`` (Qwen: 4 patches per token, LLaVA: 1), which
                         ignores LLaVA-OneVision's newline tokens and video pooling; 0 skips
                         the vision tower (text-only configs).
    stages:              progressive pruning: (layer, visual tokens left after it) per
                         stage, layers ascending, the last count ``kept_visual_tokens``;
                         ``layer`` is then the first stage's. Layers from one stage to the
                         next see that stage's sequence.

    Returns ``vision``, ``llm_unpruned``, ``llm_pruned``, ``total_unpruned``
    (vision + llm_unpruned), ``total_pruned`` and ``speedup`` = total_unpruned / total_pruned.
    Pruning does not change the vision FLOPs.

    Example, the paper's setting (LLaVA-1.5-7B = ``LlavaConfig()``; 576 visual + 60 text
    tokens; 88.9% pruned, R = 64, at K = 2)::

        >>> from transformers import LlavaConfig
        >>> f = prefill_flops(LlavaConfig(), seq_len=636, visual_tokens=576,
        ...                   kept_visual_tokens=64, layer=2)
        >>> round(f["llm_unpruned"] / 1e12, 2), round(f["llm_pruned"] / 1e12, 2)  # TFLOPs
        (8.34, 2.03)
        >>> round(f["llm_unpruned"] / f["llm_pruned"], 1), round(f["speedup"], 1)
        (4.1, 3.6)

    The LLM prefill is 4.1x cheaper: 5.2x in layers 2-31 (124 of 636 tokens), none in
    layers 0-1. The CLIP tower (0.41 TFLOPs) is not pruned, so the whole prefill gains 3.6x.
    """
    text = _text_config(config)
    if not 0 <= kept_visual_tokens <= visual_tokens <= seq_len:
        raise ValueError("need 0 <= kept_visual_tokens <= visual_tokens <= seq_len, got "
                         f"{kept_visual_tokens}, {visual_tokens}, {seq_len}")
    if not 0 <= layer < text.num_hidden_layers:
        raise ValueError(f"layer must be in [0, {text.num_hidden_layers - 1}], got {layer}")
    if num_patches is None:
        num_patches = visual_tokens * vision_shape(config).merge
    stages = list(stages or [(layer, kept_visual_tokens)])
    if stages[0][0] != layer or stages[-1][1] != kept_visual_tokens or \
            any(b[0] <= a[0] or b[1] > a[1] for a, b in zip(stages, stages[1:])):
        raise ValueError(f"stages must start at layer {layer}, rise in layer, keep no more tokens stage by "
                         f"stage and end at {kept_visual_tokens} tokens, got {stages}")
    lengths = [seq_len] * text.num_hidden_layers
    for start, kept in stages:
        lengths[start:] = [seq_len - (visual_tokens - kept)] * (text.num_hidden_layers - start)
    vision = vision_flops(config, num_patches, num_images=num_images) if num_patches else 0.0
    llm_unpruned = llm_prefill_flops(text, [seq_len] * text.num_hidden_layers)
    llm_pruned = llm_prefill_flops(text, lengths)
    return _with_totals(vision, llm_unpruned, llm_pruned)


def total_flops(per_sample: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The :func:`prefill_flops` results of several samples summed, ``speedup`` recomputed."""
    keys = ("vision", "llm_unpruned", "llm_pruned")
    sums = dict.fromkeys(keys, 0.0)
    for flops in per_sample:
        for key in keys:
            sums[key] += flops[key]
    return _with_totals(*(sums[key] for key in keys))


def _with_totals(vision: float, llm_unpruned: float, llm_pruned: float) -> dict[str, float]:
    total_unpruned, total_pruned = vision + llm_unpruned, vision + llm_pruned
    return {"vision": vision, "llm_unpruned": llm_unpruned, "llm_pruned": llm_pruned,
            "total_unpruned": total_unpruned, "total_pruned": total_pruned,
            "speedup": total_unpruned / total_pruned if total_pruned else 1.0}


def _text_config(config):
    text = config.get_text_config()
    kind = getattr(text, "model_type", None)
    if kind not in _DENSE_SWIGLU_LLMS:
        raise ValueError(f"unsupported LLM {kind!r}; supported: {', '.join(_DENSE_SWIGLU_LLMS)}")
    return text
