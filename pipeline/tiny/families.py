"""Tiny random-weight models of each supported VLM family, built from real configs.

Each builder returns ``(model, processor)`` made of the family's real transformers
classes, shrunk so that CPU tests run in seconds while keeping what pruning code
depends on: the vision geometry (patch size, spatial/temporal merge, image size,
anyres pinpoints), the placeholder-token scheme, M-RoPE, DeepStack, GQA, and at
least 4 decoder layers (methods prune before layer 2).

Shared LLM size: hidden 256, 4 layers, 4 query heads / 2 key-value heads
(head_dim 64), MLP 512, vocabulary = the tokenizer's. Vision towers are 64 wide.
Real sizes are noted next to the tiny ones where they differ in kind, not just scale.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    SiglipVisionConfig,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from pipeline.tiny import templates
from pipeline.tiny.tokenizer import QWEN2_5_ADDED, QWEN2_SPECIAL, QWEN3_ADDED, llama_tokenizer, qwen_tokenizer

Builder = Callable[[], tuple[PreTrainedModel, ProcessorMixin]]

LLM = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2
)
VISION_WIDTH = 64
SEED = 0

# Qwen pixel budgets: a 224x224 image keeps its size (64 LLM tokens with patch 14,
# 49 with patch 16) and a 4-frame 224x224 clip gives 2 x 64 (2 x 49) tokens; larger
# inputs are scaled down to at most 256 tokens per image and 4 x 224 x 224 pixels per
# clip (the cap spreads the clip budget over its frames, as qwen-vl-utils does).
# Real budgets allow thousands of tokens.
QWEN_IMAGE_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 448 * 448}
QWEN_VIDEO_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 4 * 224 * 224}
CLIP_MEAN_STD = dict(image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
HALF_MEAN_STD = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])

_BUILDERS: dict[str, Builder] = {}


def family(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under ``name``; a duplicate name is an error."""

    def wrap(build: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"tiny family {name!r} is already registered")
        _BUILDERS[name] = build
        return build

    return wrap


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``; unknown names list the known ones."""
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(_BUILDERS)}") from None


def family_names() -> tuple[str, ...]:
    return tuple(_BUILDERS)


def _model(config, generation: dict) -> PreTrainedModel:
    """Random weights from a fixed seed, so every build of a family is identical."""
    torch.manual_seed(SEED)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**generation)
    return model.eval()


def _qwen_generation(tok) -> dict:
    # Instruct checkpoints stop on <|im_end|> or <|endoftext|> and pad with <|endoftext|>.
    end = tok.convert_tokens_to_ids("<|endoftext|>")
    return dict(bos_token_id=end, eos_token_id=[tok.eos_token_id, end], pad_token_id=end)


def _qwen_ids(tok) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _qwen_text(tok, rope: dict, **extra) -> dict:
    end = tok.convert_tokens_to_ids("<|endoftext|>")
    return dict(
        LLM,
        vocab_size=len(tok),
        max_position_embeddings=32768,
        rope_parameters=rope,
        bos_token_id=end,
        eos_token_id=tok.eos_token_id,
        pad_token_id=end,
        **extra,
    )


def _qwen_image_video(patch_size: int, video_class=Qwen2VLVideoProcessor, *, image_size: dict = QWEN_IMAGE_SIZE,
                      video_size: dict = QWEN_VIDEO_SIZE, **extra) -> dict:
    """Image and video processors with the Qwen geometry: patch, 2x2 merge, 2 frames per
    patch; pixel budgets ``image_size`` and ``video_size`` (whole clip, capped per frame)."""
    geometry = dict(patch_size=patch_size, merge_size=2, temporal_patch_size=2)
    return dict(
        image_processor=Qwen2VLImageProcessor(**geometry, size=image_size, **extra),
        video_processor=video_class(**geometry, size=video_size, cap_pixels_per_frame=True, **extra),
    )


# Qwen2/2.5-VL M-RoPE: real [16, 24, 24] (t, h, w) over head_dim 128's 64 frequencies;
# halved for head_dim 64.
QWEN2_ROPE = dict(rope_type="default", rope_theta=1e6, mrope_section=[8, 12, 12])
QWEN_VISION_GEOMETRY = dict(spatial_merge_size=2, temporal_patch_size=2)


@family("qwen2_vl")
def qwen2_vl() -> tuple[PreTrainedModel, ProcessorMixin]:
    tok = qwen_tokenizer(QWEN2_SPECIAL)
    vision = dict(
        depth=2,
        embed_dim=VISION_WIDTH,
        num_heads=4,
        mlp_ratio=4,
        hidden_size=LLM["hidden_size"],  # the merger's output width
        patch_size=14,
        **QWEN_VISION_GEOMETRY,
    )
    config = Qwen2VLConfig(text_config=_qwen_text(tok, QWEN2_ROPE), vision_config=vision, **_qwen_ids(tok))
    processor = Qwen2VLProcessor(tokenizer=tok, chat_template=templates.QWEN2_VL, **_qwen_image_video(14))
    return _model(config, _qwen_generation(tok)), processor


@family("qwen2_5_vl")
def qwen2_5_vl() -> tuple[PreTrainedModel, ProcessorMixin]:
    tok = qwen_tokenizer(QWEN2_SPECIAL, QWEN2_5_ADDED)
    vision = dict(
        depth=2,
        hidden_size=VISION_WIDTH,
        intermediate_size=2 * VISION_WIDTH,
        num_heads=4,
        out_hidden_size=LLM["hidden_size"],
        patch_size=14,
        window_size=112,
        fullatt_block_indexes=[1],  # real: 32 blocks, full attention in 7, 15, 23, 31, windowed elsewhere
        tokens_per_second=2,
        **QWEN_VISION_GEOMETRY,
    )
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tok, QWEN2_ROPE), vision_config=vision, **_qwen_ids(tok))
    processor = Qwen2_5_VLProcessor(tokenizer=tok, chat_template=templates.QWEN2_VL, **_qwen_image_video(14))
    return _model(config, _qwen_generation(tok)), processor


@family("qwen3_vl")
def qwen3_vl() -> tuple[PreTrainedModel, ProcessorMixin]:
    tok = qwen_tokenizer(QWEN2_SPECIAL, QWEN3_ADDED)
    # Interleaved M-RoPE, real [24, 20, 20] over 64 frequencies; halved for head_dim 64.
    rope = dict(rope_type="default", rope_theta=5e6, mrope_section=[12, 10, 10], mrope_interleaved=True)
    text = _qwen_text(tok, rope, head_dim=LLM["hidden_size"] // LLM["num_attention_heads"])
    vision = dict(
        depth=3,
        hidden_size=VISION_WIDTH,
        intermediate_size=2 * VISION_WIDTH,
        num_heads=4,
        out_hidden_size=LLM["hidden_size"],
        patch_size=16,
        num_position_embeddings=2304,
        # Real: 27 blocks tapped after 8, 16, 24; tap i is added to the output of LLM layer i.
        deepstack_visual_indexes=[0, 1, 2],
        **QWEN_VISION_GEOMETRY,
    )
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    processor = Qwen3VLProcessor(
        tokenizer=tok,
        chat_template=templates.QWEN3_VL,
        **_qwen_image_video(16, video_class=Qwen3VLVideoProcessor, **HALF_MEAN_STD),
    )
    return _model(config, _qwen_generation(tok)), processor


@family("llava")
def llava() -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-1.5: CLIP ViT-L/14 at 336 px (24 x 24 = 576 tokens) + Vicuna (LLaMA)."""
    tok = llama_tokenizer(("<image>", "<pad>"))
    tok.pad_token = "<pad>"
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(
        hidden_size=VISION_WIDTH,
        intermediate_size=2 * VISION_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
        projection_dim=VISION_WIDTH,
    )
    text = LlamaConfig(**LLM, vocab_size=len(tok), max_position_embeddings=4096, rms_norm_eps=1e-5, **special)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=576,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, **CLIP_MEAN_STD
        ),
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the 'default' strategy
        chat_template=templates.LLAVA_1_5,
    )
    return _model(config, special), processor


# LLaVA-OneVision tiles: real 384 px base with pinpoints 384 x {1..6} by 384 x {1..6};
# tiny 112 px (8 x 8 = 64 tokens per tile, 4 x 4 per pooled video frame).
ONEVISION_TILE = 112
ONEVISION_PINPOINTS = [[ONEVISION_TILE * i, ONEVISION_TILE * j] for i in range(1, 7) for j in range(1, 7)]


@family("llava_onevision")
def llava_onevision() -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-OneVision: SigLIP/14 with anyres_max_9 tiling, pooled video frames, Qwen2 LLM."""
    tok = qwen_tokenizer(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"))
    ids = tok.convert_tokens_to_ids
    vision = SiglipVisionConfig(
        hidden_size=VISION_WIDTH,
        intermediate_size=2 * VISION_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=ONEVISION_TILE,
        patch_size=14,
        vision_use_head=False,
    )
    text = Qwen2Config(
        **LLM,
        vocab_size=len(tok),
        max_position_embeddings=32768,
        rope_theta=1e6,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    size = {"height": ONEVISION_TILE, "width": ONEVISION_TILE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=ONEVISION_PINPOINTS, **HALF_MEAN_STD
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=size, **HALF_MEAN_STD),
        tokenizer=tok,
        num_image_tokens=(ONEVISION_TILE // 14) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=templates.LLAVA_ONEVISION,
    )
    return _model(config, _qwen_generation(tok)), processor
