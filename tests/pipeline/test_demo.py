"""The demo's signal extraction and selections on a real tiny Qwen2-VL."""

import torch

from pipeline import demo
from pipeline.models import load_model


def test_demo_signals_and_every_method(tmp_path):
    model, processor = load_model("tiny:qwen2_vl", cache_dir=tmp_path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[demo.demo_image(224)], return_tensors="pt")
    sig = demo.collect_signals(model, inputs)
    t, h, w = sig["grid"]
    n = t * h * w
    assert sig["hidden"].shape == (n, model.config.text_config.hidden_size)
    assert sig["attention"].shape[1] == n and torch.all(sig["attention"] >= 0)
    kept = demo.select_all(sig, 7)
    assert sorted(kept) == ["dart", "divprune", "fastv", "random", "uniform", "vlm_pruner"]
    assert all(k.numel() == 7 and k.max() < n for k in kept.values())
    assert sum(row.count("#") for row in demo.token_map(kept["uniform"], sig["grid"])) == 7
