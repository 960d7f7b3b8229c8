"""LLaVA-OneVision: anyres images and pooled video.

An image's placeholders are its base tile (s x s, s = image_size / patch_size) followed,
when the image is tiled ("anyres"), by the unpadded high-resolution grid H' x W' with a
newline token closing every row (H' x (W' + 1) tokens; images of a multi-image sample
get only the base tile and one newline). A video is T frames pooled to ceil(s/2)^2
tokens each, then one newline. Each base tile, high-resolution grid and video is
pruned as its own span with its own grid; newline tokens are separators and are
always kept, like text. H' and W' are computed with the model's own anyres helpers.

Example (s = 8, image 100 x 180 tiled 1 x 2): base 64 tokens, then the 8 x 16 grid
unpadded to 5 x 16 -> 5 rows of 16 + newline = 85 tokens; spans (1, 8, 8), (1, 5, 16).
"""

from __future__ import annotations

import functools
import math

import torch
from transformers.models.llava_onevision.modeling_llava_onevision import (
    get_anyres_image_grid_shape,
    unpad_image,
)

from pruning import vision
from pruning.models.base import Family, InstanceAttribute, Span, register_family


class LlavaOnevisionFamily(Family):
    model_types = ("llava_onevision",)
    input_names = ("image_sizes", "batch_num_images")

    def spans(self, model, input_ids: torch.Tensor, inputs: dict) -> list[list[Span]]:
        config = model.config
        side = config.vision_config.image_size // config.vision_config.patch_size
        sizes = inputs.get("image_sizes")
        sizes = [] if sizes is None else [tuple(int(v) for v in s) for s in sizes]
        per_sample = inputs.get("batch_num_images")
        tiled = ([True] * len(sizes) if per_sample is None
                 else [int(n) == 1 for n in per_sample for _ in range(int(n))])
        images = [hires_grid(config, size, side) if t else None for size, t in zip(sizes, tiled)]
        batch, next_image = [], 0
        for b, row in enumerate(input_ids):
            spans = []
            positions = (row == config.image_token_id).nonzero().squeeze(1)
            used = 0
            while used < positions.numel():
                if next_image >= len(images):
                    raise ValueError(f"sample {b} has more <image> tokens than the batch's image_sizes cover")
                hires = images[next_image]
                next_image += 1
                spans.append(Span(positions[used:used + side * side], (1, side, side), "image"))
                used += side * side
                if hires is None:
                    used += 1  # the single newline
                    continue
                h, w = hires
                block = positions[used:used + h * (w + 1)]
                if block.numel() != h * (w + 1):
                    raise ValueError(f"sample {b}: an image of grid {hires} needs {h * (w + 1)} more "
                                     f"<image> tokens, found {block.numel()}")
                spans.append(Span(block.view(h, w + 1)[:, :w].flatten(), (1, h, w), "image"))
                used += h * (w + 1)
            spans += video_spans(row, config.video_token_id, math.ceil(side / 2))
            batch.append(sorted(spans, key=lambda s: int(s.positions[0])))
        if next_image != len(images):
            raise ValueError(f"{len(images) - next_image} images have no <image> tokens in input_ids")
        return batch

    def vision_hooks(self, model, record) -> list:
        """SigLIP has no CLS token: the mean attention each patch receives over all queries
        of its crop (or frame), in the block whose output the model takes. Crops and frames
        become LLM tokens the way the model's features do: the per-patch signals go through
        the model's own ``pack_image_features`` (tiles arranged, unpadded, bilinearly
        downscaled past anyres_max; newlines left out) and ``apply_pooling`` (bilinear to
        ceil(s/2)^2 per frame)."""
        config, base = model.config, model.model
        if config.vision_feature_select_strategy != "full":
            raise ValueError("vision signals for LLaVA-OneVision need vision_feature_select_strategy='full', "
                             f"got {config.vision_feature_select_strategy!r}")
        side = config.vision_config.image_size // config.vision_config.patch_size
        tower = base.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        attn = layers[vision.feature_block(config.vision_feature_layer, len(layers))].self_attn
        crops = {}

        def capture(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)  # (crops, P, D)
            attention, keys = vision.crop_attention(module, hidden)
            crops["signals"] = torch.cat([attention[..., None], keys], dim=-1)  # (crops, P, 1 + Dk)

        pack, pool = base.pack_image_features, base.apply_pooling

        @functools.wraps(pack)
        def pack_with_signals(image_features, image_sizes, *args, **kwargs):
            signals = torch.split(crops.pop("signals"), [f.shape[0] for f in image_features])
            no_newline = {k: v for k, v in kwargs.items() if k != "image_newline"}
            packed, _ = pack(signals, image_sizes, *args[1:], **no_newline)  # (L_i, 1 + Dk) per image
            items = []
            for tokens, size in zip(packed, image_sizes):
                items.append(_item(tokens[:side * side], (1, side, side)))
                if tokens.shape[0] > side * side:
                    h, w = hires_grid(config, tuple(int(v) for v in size), side)
                    items.append(_item(tokens[side * side:], (1, h, w)))
            record(items)
            return pack(image_features, image_sizes, *args, **kwargs)

        @functools.wraps(pool)
        def pool_with_signals(features):
            frames = pool(crops.pop("signals"))  # (frames, p^2, 1 + Dk)
            p = math.ceil(side / 2)
            record([_item(frame, (1, p, p)) for frame in frames])  # a video takes its T frames
            return pool(features)

        base.pack_image_features, base.apply_pooling = pack_with_signals, pool_with_signals
        return [attn.register_forward_pre_hook(capture, with_kwargs=True),
                InstanceAttribute(base, "pack_image_features", pack_with_signals),
                InstanceAttribute(base, "apply_pooling", pool_with_signals)]


def _item(tokens: torch.Tensor, grid: tuple[int, int, int]) -> vision.VisionItem:
    """(N, 1 + Dk) packed signals (attention first) to a VisionItem."""
    if tokens.shape[0] != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"{tokens.shape[0]} vision tokens do not fill the grid {grid}")
    return vision.VisionItem(tokens[:, 0], tokens[:, 1:], grid)


def hires_grid(config, image_size: tuple[int, int], side: int) -> tuple[int, int]:
    """(H', W') of an image's unpadded (and, past anyres_max_N, downscaled) tile grid."""
    rows, cols = get_anyres_image_grid_shape(image_size, config.image_grid_pinpoints,
                                             config.vision_config.image_size)
    h, w = unpad_image(torch.empty(1, rows * side, cols * side), image_size).shape[1:]
    max_tiles = int(config.vision_aspect_ratio.removeprefix("anyres_max_"))
    ratio = math.sqrt(h * w / (max_tiles * side * side))
    if ratio > 1.1:
        h, w = int(h // ratio), int(w // ratio)
    return h, w


def video_spans(row: torch.Tensor, token_id: int, pooled_side: int) -> list[Span]:
    """One span per contiguous run of <video> tokens: T x p x p frames then a newline."""
    positions = (row == token_id).nonzero().squeeze(1)
    if positions.numel() == 0:
        return []
    breaks = (positions[1:] - positions[:-1] != 1).nonzero().squeeze(1) + 1
    spans = []
    for run in torch.tensor_split(positions, breaks.tolist()):
        frames, rest = divmod(run.numel() - 1, pooled_side * pooled_side)
        if rest or frames < 1:
            raise ValueError(f"a run of {run.numel()} <video> tokens is not T x {pooled_side}^2 + 1")
        spans.append(Span(run[:-1], (frames, pooled_side, pooled_side), "video"))
    return spans


register_family(LlavaOnevisionFamily())
