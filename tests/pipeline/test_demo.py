"""The token-map demo: every method's kept tokens from a real pruned forward pass."""

from pipeline import demo
from pipeline.models import load_model
from pruning import list_methods


def test_demo_kept_tokens_for_every_method(tmp_path):
    model, processor = load_model("tiny:qwen2_vl", cache_dir=tmp_path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[demo.demo_image(224)], return_tensors="pt")
    kept = demo.kept_tokens(model, inputs, pruning_rate=0.75)
    assert sorted(kept) == list_methods()
    for keep, grid in kept.values():
        assert grid == (1, 8, 8) and keep.numel() == 16 and int(keep.max()) < 64
    assert sum(row.count("#") for row in demo.token_map(kept["uniform"][0], (1, 8, 8))) == 16
