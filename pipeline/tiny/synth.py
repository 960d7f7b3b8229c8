"""The architecture of ``tiny:qwen2_vl_synth``: a Qwen2-VL of about 3.5M parameters.

``jobs/train_tiny.py`` builds it here with random weights, trains it on the
``synthetic_fine`` train split and saves it, with this processor, to
``pipeline/tiny/weights/qwen2_vl_synth`` (shipped in the package; ``load_model``
loads it from there). The processor keeps the generated media at their native size:
a 336 x 336 image is 12 x 12 = 144 LLM tokens, an 8-frame 224 x 224 clip 4 x 8 x 8.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForImageTextToText,
    GenerationConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLProcessor,
)

from pipeline import synthetic
from pipeline.tiny import templates
from pipeline.tiny.families import (LLM, QWEN2_ROPE, QWEN_VISION_GEOMETRY, _qwen_generation, _qwen_ids,
                                    _qwen_image_video, _qwen_text)
from pipeline.tiny.tokenizer import QWEN2_SPECIAL, qwen_tokenizer

NAME = "qwen2_vl_synth"
# A wider vision tower than the random-weight tiny models (64): it has to learn to
# tell shapes and digits apart.
VISION = dict(depth=2, embed_dim=128, num_heads=4, mlp_ratio=2)
IMAGE_PIXELS = synthetic.IMAGE_SIZE**2
VIDEO_PIXELS = synthetic.VIDEO_FRAMES * synthetic.VIDEO_SIZE**2


def build(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The untrained model (weights from ``seed``) and its processor."""
    tok = qwen_tokenizer(QWEN2_SPECIAL)
    vision = dict(VISION, hidden_size=LLM["hidden_size"], patch_size=14, **QWEN_VISION_GEOMETRY)
    text = _qwen_text(tok, QWEN2_ROPE, tie_word_embeddings=True)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_ids(tok))
    processor = Qwen2VLProcessor(
        tokenizer=tok,
        chat_template=templates.QWEN2_VL,
        **_qwen_image_video(14, image_size={"shortest_edge": 56 * 56, "longest_edge": IMAGE_PIXELS},
                            video_size={"shortest_edge": 56 * 56, "longest_edge": VIDEO_PIXELS}),
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**_qwen_generation(tok))
    return model, processor
