"""A small pruning demo on a tiny offline model: which visual tokens each method keeps.

    python -m pipeline.demo [--model tiny:qwen2_vl] [--pruning-rate 0.778] [--image PATH]

Runs the model on an image (a generated picture unless --image is given) once per
method under ``pruning.apply`` and prints, for each method, a map of the LLM-side
token grid with the kept tokens marked (from the handle's per-span statistics).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

import pruning
from pipeline.models import load_model
from pruning import PruningConfig, list_methods
from pruning.methods import get_method


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


@torch.no_grad()
def kept_tokens(model, inputs, pruning_rate: float) -> dict[str, tuple]:
    """Per method: (kept indices into the first image's grid, the grid), from a real
    pruned forward pass (``pruning.apply``), each method at its default layer."""
    kept, depth = {}, model.config.get_text_config().num_hidden_layers
    for method in list_methods():
        values = {"method": method, "pruning_rate": pruning_rate}
        if (stages := get_method(method).default_stages) and max(stages) >= depth:
            # a progressive method's default stages, spread as evenly over this model's layers
            values["stages"] = [depth * (i + 1) // (len(stages) + 1) for i in range(len(stages))]
        with pruning.apply(model, PruningConfig.from_dict(values)) as handle:
            model(**inputs)
        span = handle.stats.samples[0][0]
        kept[method] = (torch.tensor(span.keep), span.grid)
    return kept


def token_map(keep: torch.Tensor, grid: tuple[int, int, int]) -> list[str]:
    _, h, w = grid
    cells = ["."] * (h * w)
    for i in keep.tolist():
        cells[i] = "#"
    return ["".join(cells[r * w:(r + 1) * w]) for r in range(h)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:qwen2_vl", help="any supported model spec (default: tiny:qwen2_vl)")
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
    kept = kept_tokens(model, inputs, args.pruning_rate)
    grid = next(iter(kept.values()))[1]
    counts = {name: keep.numel() for name, (keep, _) in kept.items()}
    print(f"model {args.model}: a {grid} grid of {grid[0] * grid[1] * grid[2]} visual tokens; "
          f"pruning {args.pruning_rate:.1%} (# kept, . pruned)\n")
    names = list(kept)
    maps = [token_map(kept[name][0], grid) for name in names]
    print("  ".join(f"{name:<{grid[2]}}" for name in names))
    for row in zip(*maps):
        print("  ".join(row))
    print(f"\nkept per method: {counts}")


if __name__ == "__main__":
    main()
