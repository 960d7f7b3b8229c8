"""pipeline.models: tiny real-family VLMs are built, cached, and run like real checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers.video_utils import VideoMetadata

from pipeline import tiny
from pipeline.models import TINY_MODELS, load_model, tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
FAMILIES = [spec.removeprefix("tiny:") for spec in TINY_MODELS]
VIDEO_FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision"]
QWEN_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}

# Placeholder tokens for one 224x224 image and one 4-frame 224x224 clip:
#   Qwen2/2.5-VL: 16x16 patches of 14 px, merged 2x2 -> 64; clip (4/2)x16x16/4 -> 128.
#   Qwen3-VL: 14x14 patches of 16 px -> 49; clip 2x14x14/4 -> 98.
#   LLaVA-1.5: resized to 336 px, 24x24 patches -> 576 (CLS dropped).
#   LLaVA-OneVision: 8x8 base tile + 2x2 tiles of 8x8 (16x16) + 16 row newlines -> 336;
#   clip: 4 frames pooled 8x8 -> 4x4, + 1 newline -> 65.
IMAGE_TOKENS_224 = {"qwen2_vl": 64, "qwen2_5_vl": 64, "qwen3_vl": 49, "llava": 576, "llava_onevision": 336}
VIDEO_TOKENS_4x224 = {"qwen2_vl": 128, "qwen2_5_vl": 128, "qwen3_vl": 98, "llava_onevision": 65}

PROMPTS = {
    "qwen2_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "llava": "USER: <image>\nWhat is shown? ASSISTANT:",
    "llava_onevision": "<|im_start|>user\n<image>\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n",
}
PROMPTS["qwen2_5_vl"] = PROMPTS["qwen2_vl"]


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))


def _video() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)  # (T, H, W, 3)


def _inputs(processor, *, video: bool, text: str = "What is shown?"):
    content = [{"type": "image", "image": _image()}]
    processor_kwargs = {}
    if video:
        content.append({"type": "video", "video": _video()})
        # Frames passed as an array carry no fps; Qwen3-VL needs it for its timestamps.
        metadata = VideoMetadata(total_num_frames=4, fps=2.0, frames_indices=[0, 1, 2, 3])
        processor_kwargs["video_metadata"] = [metadata]
    content.append({"type": "text", "text": text})
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs=processor_kwargs,
    )  # fmt: skip


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def loaded(cache_dir):
    """load(family) -> (model, processor), loaded once per session."""
    models = {}

    def load(family: str):
        if family not in models:
            models[family] = load_model(f"tiny:{family}", cache_dir=cache_dir)
        return models[family]

    return load


@pytest.mark.parametrize("family", FAMILIES)
def test_load_gives_eval_model_and_matching_processor(loaded, family):
    model, processor = loaded(family)
    tok = processor.tokenizer
    text = model.config.text_config
    assert not model.training
    assert model.dtype == torch.float32
    assert text.hidden_size >= 256 and text.num_hidden_layers >= 4
    assert (text.num_attention_heads, text.num_key_value_heads) == (4, 2)
    assert text.vocab_size == len(tok) == model.get_input_embeddings().num_embeddings
    assert model.config.image_token_id == tok.convert_tokens_to_ids(processor.image_token)
    if family in VIDEO_FAMILIES:
        assert model.config.video_token_id == tok.convert_tokens_to_ids(processor.video_token)
    if family in QWEN_FAMILIES:
        assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    eos = model.generation_config.eos_token_id
    assert tok.eos_token_id in (eos if isinstance(eos, list) else [eos])
    assert model.generation_config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_prompt_text(loaded, family):
    _, processor = loaded(family)
    content = [{"type": "image"}, {"type": "text", "text": "What is shown?"}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    assert prompt == PROMPTS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_round_trips_english(loaded, family):
    tok = loaded(family)[1].tokenizer
    text = "The café's 3 dogs, and 12½ cats!  Über-fast? (yes)\n\tDone."
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    # Trained merges, not bytes: a typical prompt is a handful of tokens.
    assert len(tok("Describe the image in detail.", add_special_tokens=False).input_ids) <= 10


@pytest.mark.parametrize("family", FAMILIES)
def test_placeholders_match_vision_grid(loaded, family):
    model, processor = loaded(family)
    video = family in VIDEO_FAMILIES
    inputs = _inputs(processor, video=video)
    ids = inputs["input_ids"]
    n_image = int((ids == model.config.image_token_id).sum())
    assert n_image == IMAGE_TOKENS_224[family]
    if family in QWEN_FAMILIES:
        assert n_image == int(inputs["image_grid_thw"].prod()) // 4
    if video:
        n_video = int((ids == model.config.video_token_id).sum())
        assert n_video == VIDEO_TOKENS_4x224[family]
        if family in QWEN_FAMILIES:
            assert n_video == int(inputs["video_grid_thw"].prod()) // 4


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_and_generate(loaded, family):
    model, processor = loaded(family)
    inputs = _inputs(processor, video=family in VIDEO_FAMILIES)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, n, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1 and n < out.shape[1] <= n + 3
    assert torch.equal(out[:, :n], inputs["input_ids"])


def test_builds_are_identical_across_cache_dirs(loaded, cache_dir, tmp_path):
    for family in FAMILIES:
        first, second = tiny_checkpoint(family, cache_dir), tiny_checkpoint(family, tmp_path)
        a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), family
        for name in ("config.json", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
            assert (first / name).read_text() == (second / name).read_text(), (family, name)


def test_cache_is_reused(loaded, cache_dir):
    loaded("llava")
    path = tiny_checkpoint("llava", cache_dir)
    weights = (path / "model.safetensors").stat()
    load_model("tiny:llava", cache_dir=cache_dir)
    again = (tiny_checkpoint("llava", cache_dir) / "model.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (weights.st_ino, weights.st_mtime_ns)
    assert path.name == f"llava-v{tiny.VERSION}"
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")], "scratch build left behind"


def test_saved_dir_loads_as_plain_path(loaded, cache_dir):
    model, _ = loaded("qwen2_vl")
    plain, processor = load_model(str(tiny_checkpoint("qwen2_vl", cache_dir)))
    assert type(plain) is type(model) and type(processor).__name__ == "Qwen2VLProcessor"
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in plain.state_dict().items())


def test_dtype_by_name_or_torch_dtype(loaded, cache_dir):
    loaded("qwen2_vl")
    model, _ = load_model("tiny:qwen2_vl", dtype="bfloat16", cache_dir=cache_dir)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _ = load_model("tiny:qwen2_vl", dtype=torch.float16, cache_dir=cache_dir)
    assert model.dtype == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny:qwen2_vl", dtype="float33", cache_dir=cache_dir)


def test_unknown_tiny_name_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="tiny:qwen2_vl.*tiny:llava_onevision"):
        load_model("tiny:gpt5_vl", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_concurrent_processes_share_one_build(tmp_path):
    """Two processes building the same family at once both end with one complete entry."""
    code = "import sys; from pipeline.models import tiny_checkpoint as c; print(c('llava', sys.argv[1]))"
    command = [sys.executable, "-c", code, str(tmp_path)]
    procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    paths = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0]
    assert paths == {str(tmp_path / f"llava-v{tiny.VERSION}")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"llava-v{tiny.VERSION}"]
    load_model(paths.pop())
