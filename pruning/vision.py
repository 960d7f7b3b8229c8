"""Vision-encoder signals per LLM-side visual token: ``vision_attention`` and ``vision_keys``.

Methods that rank tokens by what the vision encoder saw (VisionZip) read, per visual
span of N LLM tokens:

    vision_attention  (N,)      attention each token receives in one encoder layer
    vision_keys       (N, Dk)   that layer's keys (heads concatenated, after any rotary)

Which layer and which attention, per family (the family classes in ``pruning.models``
install the hooks, with the helpers below):

    LLaVA-1.5 (CLIP, CLS token)   the CLS query's row, heads averaged, CLS column dropped,
                                  in the block whose output the model takes
                                  (``config.vision_feature_layer``, -2)
    Qwen2-VL / Qwen3-VL           mean over heads and over all queries of the same frame
                                  (the encoder attends within a frame) of the attention
                                  each patch receives, in the last block (it feeds the merger)
    Qwen2.5-VL                    the same, in the last full-attention block
    LLaVA-OneVision (SigLIP)      mean over heads and over all queries of the same crop
                                  (or video frame), in the block whose output the model
                                  takes (``vision_feature_layer``, -1)

Qwen's merger joins ``spatial_merge_size``^2 consecutive patches into one LLM token:
a token's attention is the sum over its patches (the attention mass it receives) and
its keys are its patches' keys concatenated in merge order, as the merger concatenates
their features. Qwen2.5-VL's blocks see the tokens in window order; the captured
signals are put back in raster order with the inverse of the model's window index, as
the model does after its merger. LLaVA-OneVision's crops and frames go through the
model's own ``pack_image_features`` and ``apply_pooling`` (its anyres layout, unpadding,
bilinear downscaling and frame pooling, no newline tokens), so a token's signals are
pooled exactly as its features are; see ``pruning/models/llava_onevision.py``.

The signals are computed by a forward pre-hook on the chosen attention module from
its own input (q/k projections plus rotary, like ``engine.rotary_query_key``), so the
model keeps running under SDPA or flash attention. ``tests/pruning/test_vision.py``
checks them against eager attention weights of the same layer.

Bookkeeping: the vision encoder runs before the prefill it belongs to (``generate``
encodes once and then passes the features to each forward), images before videos.
Each encoder call adds one :class:`VisionItem` per LLM span, in the order of the
batch's images (then videos); the first encoder call after a prefill has read them
starts a new list, and so does a forward given pixels (it encodes them itself). A
prefill's spans take the items in that order, their grids checked.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from pruning.models.base import Span

VISION_SIGNALS = frozenset({"vision_attention", "vision_keys"})
_QUERY_CHUNK = 1024  # queries per attention block: bounds memory at heads x 1024 x L floats


@dataclass(frozen=True)
class VisionItem:
    """The vision signals of one LLM-side span, in its raster order.

    attention: (N,) float32; keys: (N, Dk) float32; grid: the span's (T, H, W).
    """

    attention: torch.Tensor
    keys: torch.Tensor
    grid: tuple[int, int, int]


class VisionCapture:
    """Collects :class:`VisionItem` s as the vision encoder runs; ``hooks`` undo it."""

    def __init__(self, model: nn.Module, family):
        self._items: list[VisionItem] = []
        self._read = False
        self.hooks = family.vision_hooks(model, self._record) + [
            model.register_forward_pre_hook(self._on_model_call, with_kwargs=True)]

    def _on_model_call(self, module, args, kwargs) -> None:
        # A forward given pixels encodes them itself: whatever an earlier, failed call left is stale.
        if any(kwargs.get(name) is not None for name in ("pixel_values", "pixel_values_videos")):
            self._items, self._read = [], False

    def _record(self, items: list[VisionItem]) -> None:
        if self._read:  # a new encoder pass after a prefill read the previous one
            self._items, self._read = [], False
        self._items.extend(items)

    def item(self, spans: list[list[Span]], span: Span) -> VisionItem:
        """The item of ``span``, one of the prefill's ``spans`` (per sample). A video may
        have been recorded frame by frame (LLaVA-OneVision): it takes its T frames."""
        self._read = True
        ordered = [s for kind in ("image", "video") for sample in spans for s in sample if s.kind == kind]
        cursor, found = 0, None
        for s in ordered:
            grid = tuple(s.grid)
            count = grid[0] if s.kind == "video" and self._grid(cursor) == (1, *grid[1:]) else 1
            taken = self._items[cursor:cursor + count]
            if len(taken) != count or any(t.grid != (grid if count == 1 else (1, *grid[1:])) for t in taken):
                raise ValueError(f"the vision encoder's signals ({len(self._items)} items, next grid "
                                 f"{self._grid(cursor)}) do not match the batch's {s.kind} span of grid {grid}")
            cursor += count
            if s is span:
                found = taken
        if cursor != len(self._items) or found is None:
            raise ValueError(f"the vision encoder gave {len(self._items)} items of signals; the batch's "
                             f"{len(ordered)} visual spans take {cursor}")
        if len(found) == 1:
            return found[0]
        return VisionItem(torch.cat([t.attention for t in found]), torch.cat([t.keys for t in found]),
                          tuple(span.grid))

    def _grid(self, cursor: int):
        return self._items[cursor].grid if cursor < len(self._items) else None


def capture(model: nn.Module, family, signals: set[str]) -> Optional[VisionCapture]:
    """A :class:`VisionCapture` on ``model`` if ``signals`` include a vision signal, else None."""
    return VisionCapture(model, family) if VISION_SIGNALS & set(signals) else None


def for_span(vision: Optional[VisionCapture], spans: list[list[Span]], span: Span) -> VisionItem:
    """``span``'s vision signals on its own device; refuses when nothing was captured."""
    if vision is None:
        raise ValueError("vision signals are captured only by a handle applied with a method that reads "
                         "them; apply a new handle for this method")
    item = vision.item(spans, span)
    device = span.positions.device
    return VisionItem(item.attention.to(device), item.keys.to(device), item.grid)


def feature_block(feature_layer, num_blocks: int) -> int:
    """The encoder block whose output is ``hidden_states[feature_layer]`` (entry 0 is the
    embeddings, entry i the output of block i-1). Example: -2 of 24 blocks -> block 22."""
    if not isinstance(feature_layer, int) or isinstance(feature_layer, bool):
        raise ValueError(f"vision signals need one vision_feature_layer, got {feature_layer!r}")
    index = feature_layer if feature_layer >= 0 else num_blocks + 1 + feature_layer
    if not 1 <= index <= num_blocks:
        raise ValueError(f"vision_feature_layer {feature_layer} is not the output of an encoder block "
                         f"({num_blocks} blocks)")
    return index - 1


def cls_attention(attn: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP: the CLS row of ``attn`` on its (normed) input ``hidden`` (B, 1 + P, D).

    Returns attention (B, P) (heads averaged, softmax over all 1 + P keys, the CLS
    column dropped) and keys (B, P, heads * d), float32."""
    b, t, _ = hidden.shape
    heads, d = attn.num_heads, attn.head_dim
    q = attn.q_proj(hidden[:, :1]).view(b, 1, heads, d).transpose(1, 2).float()  # (B, H, 1, d)
    k = attn.k_proj(hidden).view(b, t, heads, d).transpose(1, 2).float()  # (B, H, T, d)
    weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # (B, H, 1, T)
    attention = weights[:, :, 0].mean(dim=1)[:, 1:]  # (B, P)
    return attention, k.transpose(1, 2).reshape(b, t, heads * d)[:, 1:]


def crop_attention(attn: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoders without a CLS token (SigLIP): ``received_attention`` per crop of ``attn``'s
    (normed) input ``hidden`` (B, P, D). Returns attention (B, P) and keys (B, P, heads * d)."""
    b, p, _ = hidden.shape
    heads, d = attn.num_heads, attn.head_dim
    q = attn.q_proj(hidden).view(b, p, heads, d).transpose(1, 2)  # (B, H, P, d)
    k = attn.k_proj(hidden).view(b, p, heads, d).transpose(1, 2)
    attention = torch.stack([received_attention(q[i], k[i], attn.scale) for i in range(b)])
    return attention, k.transpose(1, 2).reshape(b, p, heads * d).float()


def received_attention(q: torch.Tensor, k: torch.Tensor, scaling: float) -> torch.Tensor:
    """(L,) mean over heads and queries of the attention each key receives.

    q, k: (H, L, d). Softmax over the L keys; queries are taken in blocks of
    ``_QUERY_CHUNK`` so memory stays O(H x chunk x L)."""
    heads, length, _ = q.shape
    total = torch.zeros(length, dtype=torch.float32, device=q.device)
    for lo in range(0, length, _QUERY_CHUNK):
        block = q[:, lo:lo + _QUERY_CHUNK].float() @ k.float().transpose(-1, -2) * scaling  # (H, c, L)
        total += torch.softmax(block, dim=-1).sum(dim=(0, 1))
    return total / (heads * length)


def packed_attention(attn: nn.Module, hidden: torch.Tensor, cu_seqlens: torch.Tensor,
                     position_embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen vision attention on a packed sequence ``hidden`` (S, D) split by ``cu_seqlens``.

    q/k as the module's forward computes them: its ``qkv`` projection, then the
    ``apply_rotary_pos_emb_vision`` of the module's own modeling file. Returns the
    received attention per patch (S,) (``received_attention`` per segment) and the
    keys (S, heads * d), float32."""
    rotary = getattr(inspect.getmodule(type(attn)), "apply_rotary_pos_emb_vision", None)
    if rotary is None:
        raise RuntimeError(f"{type(attn).__module__} has no apply_rotary_pos_emb_vision: this transformers "
                           "version is not supported for vision signals")
    s = hidden.shape[0]
    q, k, _ = attn.qkv(hidden).reshape(s, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)  # (S, H, d)
    cos, sin = position_embeddings
    q, k = rotary(q, k, cos, sin)
    bounds = cu_seqlens.tolist()
    received = torch.cat([received_attention(q[lo:hi].transpose(0, 1), k[lo:hi].transpose(0, 1), attn.scaling)
                          for lo, hi in zip(bounds[:-1], bounds[1:])])
    return received, k.reshape(s, -1).float()


def merged_items(attention: torch.Tensor, keys: torch.Tensor, grid_thw: torch.Tensor, merge: int,
                 order: Optional[torch.Tensor] = None) -> list[VisionItem]:
    """Qwen: per-patch signals (S,), (S, Dk) to one item per image / video of ``grid_thw``.

    Each run of merge^2 patches is one LLM token: attention summed, keys concatenated.
    ``order`` (tokens,) puts the tokens back in raster order (Qwen2.5-VL's windows)."""
    unit = merge * merge
    attention = attention.view(-1, unit).sum(dim=1)  # (S / unit,)
    keys = keys.reshape(-1, unit * keys.shape[1])  # (S / unit, unit * Dk)
    if order is not None:
        attention, keys = attention[order], keys[order]
    items, start = [], 0
    for t, h, w in grid_thw.tolist():
        grid = (int(t), int(h) // merge, int(w) // merge)
        n = grid[0] * grid[1] * grid[2]
        items.append(VisionItem(attention[start:start + n], keys[start:start + n], grid))
        start += n
    return items
