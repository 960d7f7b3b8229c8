"""A small pruning demo on a tiny offline model: which visual tokens each method keeps.

    python -m pipeline.demo [--model tiny:qwen2_vl] [--pruning-rate 0.778] [--image PATH]

Runs the model once on an image (a generated picture unless --image is given), takes
the signals every method needs from that one forward pass (layer-1 outputs and
rotary keys for VLM-Pruner and DART, the last prompt token's layer-1 attention for
FastV, the projector's visual embeddings for DivPrune) and prints, for each method, a
map of the LLM-side token grid with the kept tokens marked. It stands in for
`jobs/sweep.py` until the sweep exists.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from PIL import Image, ImageDraw

from pipeline.models import load_model
from pruning.methods import dart, divprune, fastv, random, uniform, vlm_pruner

LAYER = 2  # prune before decoder layer 2: signals come from layer 1


def demo_image(size: int = 448) -> Image.Image:
    """A picture with a few small coloured objects on a smooth background."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        shade = int(60 + 120 * y / size)
        draw.line([(0, y), (size, y)], fill=(shade, shade, 200 - shade // 2))
    for i, colour in enumerate(["red", "yellow", "lime", "white", "orange"]):
        x, y = 40 + 80 * i, 60 + 70 * (i % 3)
        draw.ellipse([x, y, x + 36, y + 36], fill=colour)
    draw.rectangle([300, 330, 420, 420], fill="black")
    return image


def rotary_keys_and_queries(attn, hidden, position_embeddings):
    """Keys (B, S, kv_heads * d) and queries (B, heads, S, d) of one attention layer
    after the rotary embedding, from its normed input ``hidden`` (B, S, D)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb

    b, s, _ = hidden.shape
    d = attn.head_dim
    q = attn.q_proj(hidden).view(b, s, -1, d).transpose(1, 2)
    k = attn.k_proj(hidden).view(b, s, -1, d).transpose(1, 2)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return k.transpose(1, 2).reshape(b, s, -1), q, k


@torch.no_grad()
def collect_signals(model, inputs):
    """One forward pass; returns the per-span signals of the first (only) image."""
    layers = model.model.language_model.layers
    captured = {}

    def grab(module, args, kwargs):
        captured["attn_in"] = kwargs.get("hidden_states", args[0] if args else None)
        captured["rope"] = kwargs["position_embeddings"]

    handle = layers[LAYER - 1].self_attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = model(**inputs, output_hidden_states=True)
    finally:
        handle.remove()
    ids = inputs["input_ids"][0]
    span = (ids == model.config.image_token_id).nonzero().squeeze(1)
    t, h, w = inputs["image_grid_thw"][0].tolist()
    merge = model.config.vision_config.spatial_merge_size
    grid = (t, h // merge, w // merge)

    attn = layers[LAYER - 1].self_attn
    keys, q, k = rotary_keys_and_queries(attn, captured["attn_in"], captured["rope"])
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    last = q[0, :, -1]  # (heads, d): the last prompt token
    attention = torch.softmax(last[:, None, :] @ k[0].transpose(1, 2) / math.sqrt(attn.head_dim), -1)
    hidden = out.hidden_states[LAYER][0]  # input of layer 2
    normed = model.model.language_model.norm(hidden)
    after = torch.arange(span[-1] + 1, ids.numel())
    return {
        "grid": grid,
        "hidden": hidden[span], "keys": keys[0][span], "attention": attention[:, 0, span],
        "normed": normed[span], "text_keys": keys[0][after], "text_normed": normed[after],
        "embeddings": out.hidden_states[0][0][span],
    }


def select_all(sig, num_retain: int) -> dict[str, torch.Tensor]:
    n = sig["hidden"].shape[0]
    return {
        "vlm_pruner": vlm_pruner.select(sig["hidden"], sig["keys"], sig["grid"], num_retain).keep,
        "fastv": fastv.select(sig["attention"], num_retain).keep,
        "dart": dart.select(sig["keys"], sig["normed"], num_retain, text_key_states=sig["text_keys"],
                            text_hidden_states=sig["text_normed"]).keep,
        "divprune": divprune.select(sig["embeddings"], num_retain).keep,
        "random": random.select(n, num_retain).keep,
        "uniform": uniform.select(sig["grid"], num_retain).keep,
    }


def token_map(keep: torch.Tensor, grid: tuple[int, int, int]) -> list[str]:
    _, h, w = grid
    cells = ["."] * (h * w)
    for i in keep.tolist():
        cells[i] = "#"
    return ["".join(cells[r * w:(r + 1) * w]) for r in range(h)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:qwen2_vl", help="a Qwen2-VL-family spec (default: tiny:qwen2_vl)")
    parser.add_argument("--pruning-rate", type=float, default=0.778, help="share of visual tokens removed")
    parser.add_argument("--image", help="an image file (default: a generated picture)")
    args = parser.parse_args(argv)
    if not 0 <= args.pruning_rate < 1:
        parser.error(f"--pruning-rate must be in [0, 1), got {args.pruning_rate}")

    model, processor = load_model(args.model)
    image = Image.open(args.image).convert("RGB") if args.image else demo_image()
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "What is in the picture?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    sig = collect_signals(model, inputs)
    n = sig["hidden"].shape[0]
    num_retain = round(n * (1 - args.pruning_rate))
    print(f"model {args.model}: {n} visual tokens on a {sig['grid']} grid; pruning "
          f"{args.pruning_rate:.1%} keeps {num_retain} (# kept, . pruned)\n")
    start = time.perf_counter()
    kept = select_all(sig, num_retain)
    elapsed = time.perf_counter() - start
    names = list(kept)
    maps = [token_map(kept[name], sig["grid"]) for name in names]
    width = sig["grid"][2]
    print("  ".join(f"{name:<{width}}" for name in names))
    for row in zip(*maps):
        print("  ".join(row))
    print(f"\nall six selections took {elapsed * 1e3:.1f} ms; every method kept exactly "
          f"{num_retain}: {all(k.numel() == num_retain for k in kept.values())}")


if __name__ == "__main__":
    main()
