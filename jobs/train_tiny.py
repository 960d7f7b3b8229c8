"""Train ``tiny:qwen2_vl_synth``: a 3.5M-parameter Qwen2-VL that reads small details.

    python jobs/train_tiny.py [--out pipeline/tiny/weights/qwen2_vl_synth] [--steps N] ...

Builds the architecture of ``pipeline/tiny/synth.py`` with random weights from
``--seed`` and trains it in two stages, then saves model and processor with
``save_pretrained``:

1. ``--vision-steps``: the vision tower alone, with a linear probe on its output (the
   LLM's visual tokens) that names what is in each token's cell (``TokenProbe``), on
   crowded pictures (``dense_example``).
2. ``--steps``: the whole model on the ``synthetic_fine`` train split (examples drawn in
   order, see ``batch_indices``), with AdamW and a warm-up + cosine learning rate. The
   loss is on the answer tokens (the option letter or the short answer, then
   <|im_end|>, after the prompt exactly as the task builds it), plus the probe loss,
   plus attention supervision (``attention_loss``), with objects shrinking to their
   test size over the first steps (``curriculum_scale``).

The probe and the supervision are training aids, not part of the saved model.

Reproducible: the data are a function of the step, the weights of --seed, and torch runs
with --threads threads and deterministic algorithms; the same command gives the same
weights on the same software stack. On the 2-core development machine the default run
takes about 27 minutes (stage 1 ~1 s/step, stage 2 ~1.9 s/step). Every --eval-every
steps the greedy answer accuracy on the validation split (per kind) is logged; the test
split is left for the demo sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from pipeline import synthetic  # noqa: E402
from pipeline.infer import chat_text  # noqa: E402
from pipeline.tiny import synth  # noqa: E402

log = logging.getLogger("train_tiny")
DEFAULT_OUT = REPO / "pipeline" / "tiny" / "weights" / synth.NAME


def encode(processor, examples: Sequence[synthetic.Example], *, with_answers: bool) -> dict:
    """Processor inputs for ``examples`` (left-padded); with answers appended and
    ``labels`` that score only the answer and its <|im_end|>."""
    tok = processor.tokenizer
    texts, images, videos = [], [], []
    for ex in examples:
        video = ex.frames is not None
        text = chat_text(processor, synthetic.prompt(ex), images=0 if video else 1, video=video)
        if with_answers:
            text += ex.answer + "<|im_end|>"
        texts.append(text)
        if ex.frames is not None:
            videos.append(ex.frames)
        else:
            images.append(ex.image)
    kwargs = dict(text=texts, padding=True, return_tensors="pt")
    if images:
        kwargs["images"] = images
    if videos:
        kwargs.update(videos=videos, do_sample_frames=False)
    side, tok.padding_side = tok.padding_side, "left"
    try:
        inputs = dict(processor(**kwargs))
    finally:
        tok.padding_side = side
    if with_answers:
        labels = torch.full_like(inputs["input_ids"], -100)
        for b, ex in enumerate(examples):
            n = len(tok(ex.answer + "<|im_end|>").input_ids)
            labels[b, -n:] = inputs["input_ids"][b, -n:]
        inputs["labels"] = labels
    return inputs


# ---------------------------------------------------------------- dense auxiliary targets
#
# The answer loss gives one label per example, too weak a signal to grow a vision
# tower from scratch in a CPU budget. So during training a linear probe on the vision
# merger's output (the LLM's visual tokens) also predicts, for every token, what the
# generator drew in its 28 x 28 px cell: the object's colour, its shape, a digit, and
# (clips) whether it moves. The probe is thrown away; what it leaves is a vision tower
# whose tokens describe their own cell, as the tokens of real VLMs describe their patch.

HEADS = {"colour": len(synthetic.COLOURS) + 1, "shape": len(synthetic.SHAPES) + 1, "digit": 11, "motion": 2}
OBJECT_WEIGHT = 40.0  # objects cover a few of 144 cells: weigh them about as much as the background


def _cells(x: float, y: float, w: float, h: float, grid: int, margin: int = 3) -> list[tuple[int, int]]:
    """Token cells (row, col) that the box overlaps by more than ``margin`` px both ways."""
    cell = synthetic.CELL
    rows = range(max(0, int((y + margin) // cell)), min(grid, int((y + h - margin - 1) // cell) + 1))
    cols = range(max(0, int((x + margin) // cell)), min(grid, int((x + w - margin - 1) // cell) + 1))
    return [(r, c) for r in rows for c in cols]


def token_targets(ex: synthetic.Example) -> dict[str, torch.Tensor]:
    """Per visual token class labels, each (T', H', W') in the model's token order
    (0 = nothing there): ``HEADS`` names them."""
    colours, shapes = list(synthetic.COLOURS), list(synthetic.SHAPES)
    if ex.frames is None:
        groups, grid = 1, synthetic.IMAGE_SIZE // synthetic.CELL
    else:
        groups, grid = synthetic.VIDEO_FRAMES // 2, synthetic.VIDEO_SIZE // synthetic.CELL
    out = {name: torch.zeros(groups, grid, grid, dtype=torch.long) for name in HEADS}
    details = ex.details
    digits = details.get("digits", [(details["digit"], details["box"])] if "box" in details else [])
    for digit, box in digits:
        for r, c in _cells(*box, grid):
            out["digit"][0, r, c] = 1 + digit
    movers = details.get("movers", {})
    for i, (shape, colour, x, y, side) in enumerate(details.get("objects", [])):
        moving = i in movers
        for g in range(groups):
            frames = (2 * g, 2 * g + 1) if ex.frames is not None else (0,)
            for t in frames:
                ox, oy = synthetic.mover_offset(movers, i, t)
                for r, c in _cells(x + ox, y + oy, side, side, grid):
                    out["colour"][g, r, c] = 1 + colours.index(colour)
                    out["shape"][g, r, c] = 1 + shapes.index(shape)
                    out["motion"][g, r, c] = int(moving)
    return out


def pixel_inputs(processor, examples: Sequence[synthetic.Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel values, grid) of ``examples`` through the image or video processor alone
    (all images or all clips: ``batch_indices`` never mixes them)."""
    if examples[0].frames is not None:
        out = processor.video_processor(videos=[ex.frames for ex in examples], do_sample_frames=False,
                                        return_tensors="pt")
        return out["pixel_values_videos"], out["video_grid_thw"]
    out = processor.image_processor(images=[ex.image for ex in examples], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def pretrain_vision(model, processor, probe: "TokenProbe", *, steps: int, batch_size: int, lr: float) -> dict:
    """Stage 1: the vision tower and the probe alone, on the per-token targets (no LLM:
    about a third of a full step's cost). Returns the probe's accuracy on the cells
    that hold something, per head, over the last 20 steps."""
    from tqdm import tqdm

    params = list(model.model.visual.parameters()) + list(probe.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    recent: dict[str, list[float]] = {}
    bar = tqdm(range(steps), desc="vision", unit="step", dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, 20)
        # Crowded pictures (clips every len(KINDS)-th step, as in stage 2).
        video = step % len(synthetic.KINDS) == len(synthetic.KINDS) - 1
        batch = [dense_example(step * batch_size + i, video) for i in range(batch_size)]
        targets = [token_targets(ex) for ex in batch]
        pixels, grid = pixel_inputs(processor, batch)
        tokens = model.model.visual(pixels, grid_thw=grid).pooler_output
        loss = probe.loss(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for name, acc in probe.accuracy(tokens.detach(), targets).items():
            recent.setdefault(name, []).append(acc)
            del recent[name][:-20]
        bar.set_postfix(loss=f"{loss.item():.3f}",
                        **{k: f"{sum(v) / len(v):.2f}" for k, v in recent.items()})
    return {k: sum(v) / len(v) for k, v in recent.items()}


def dense_example(index: int, video: bool) -> synthetic.Example:
    """A stage-1 picture (or clip) crowded with labelled things on the token grid: 16
    shapes and digits (clips: 6 shapes, half of them hopping as in "moved"), so every
    picture carries a dozen labelled cells instead of one or two."""
    import numpy as np
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng([3, index, int(video)])
    size = synthetic.VIDEO_SIZE if video else synthetic.IMAGE_SIZE
    count = 6 if video else 16
    background = synthetic.background(rng, size)
    font = ImageFont.load_default(size=synthetic.FONT_SIZE)
    spots = synthetic.cell_places(rng, count, size, synthetic.OBJECT_SIZE[1]) if video else None
    grid = size // synthetic.CELL
    cells = None if video else [divmod(int(c), grid) for c in rng.choice(grid * grid, size=count, replace=False)]
    objects, digits, movers = [], [], {}
    for k in range(count):
        if not video and k % 3 == 0:
            digit = int(rng.integers(10))
            box = ImageDraw.Draw(background).textbbox((0, 0), str(digit), font=font)
            w, h = box[2] - box[0], box[3] - box[1]
            r, c = cells[k]
            x, y = c * synthetic.CELL + (synthetic.CELL - w) // 2, r * synthetic.CELL + (synthetic.CELL - h) // 2
            digits.append((digit, (x, y, w, h), box))
            continue
        side = int(rng.integers(synthetic.OBJECT_SIZE[0], synthetic.OBJECT_SIZE[1] + 1))
        if video:
            x, y = spots[k]
        else:
            r, c = cells[k]
            j = (synthetic.CELL - side) // 2
            x, y = c * synthetic.CELL + j, r * synthetic.CELL + j
        shape = synthetic.SHAPES[int(rng.integers(len(synthetic.SHAPES)))]
        colour = list(synthetic.COLOURS)[int(rng.integers(len(synthetic.COLOURS)))]
        if video and k % 2 == 0:
            options = [(dx, dy) for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]
                       if 0 <= x + dx * synthetic.CELL <= size - side and 0 <= y + dy * synthetic.CELL <= size - side]
            movers[len(objects)] = (options[int(rng.integers(len(options)))], synthetic.CELL)
        objects.append((shape, colour, x, y, side))
    frames = []
    for t in range(synthetic.VIDEO_FRAMES if video else 1):
        frame = background.copy()
        draw = ImageDraw.Draw(frame)
        for i, (shape, colour, x, y, side) in enumerate(objects):
            ox, oy = synthetic.mover_offset(movers, i, t)
            synthetic.draw_shape(draw, shape, x + ox, y + oy, side, colour)
        for digit, (x, y, _, _), box in digits:
            draw.text((x - box[0], y - box[1]), str(digit), font=font, fill=synthetic.COLOURS["black"])
        frames.append(frame)
    details = {"objects": objects, "digits": [(d, b) for d, b, _ in digits], "movers": movers}
    if video:
        return synthetic.Example("moved", "", [], "", frames=np.stack([np.asarray(f) for f in frames]),
                                 details=details)
    return synthetic.Example("dense", "", [], "", image=frames[0], details=details)


def answer_cells(ex: synthetic.Example, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """(visual tokens,) bool, in the model's token order: the cells that answer the
    question (the object, every counted object, the digit, the moving shape), from
    ``ex``'s ``token_targets``."""
    if ex.kind == "digit":
        mask = targets["digit"] > 0
    elif ex.kind == "moved":
        mask = targets["motion"] > 0
    else:
        mask = targets["colour"] > 0
    return mask.flatten()


# Attention supervision: head 0 of these decoder layers is taught to look, from the
# position that generates the answer, at the cells that hold it. Layer 1 is the one
# FastV reads; layers 2-3 come after the default pruning layer, so pruning has to keep
# what they look at.
ATTENTION_LAYERS = (1, 2, 3)
ATTENTION_HEAD = 0


def count_share(objects: int) -> float:
    """Attention mass a ``count`` question's head should put on its ``objects`` objects:
    as much on each object as on the text, n / (n + 1). A head whose weight sits on the
    objects alone reads the same average for 1 to 4 of them; one that also weighs the
    text reads an object share that grows with their number, and, unlike a share of the
    whole picture, that share does not change when background tokens are pruned."""
    return objects / (objects + 1)


def attention_loss(weights: dict[int, torch.Tensor], inputs: dict, examples: Sequence[synthetic.Example],
                   targets: Sequence[dict], visual_ids: tuple[int, ...]) -> torch.Tensor:
    """Mean over examples and supervised layers of the attention supervision's loss:
    -log(attention mass on the answer cells); for ``count``, the cross-entropy of the
    (objects, text) masses against (``count_share``, rest), minus its minimum.

    weights: layer -> (B, heads, L, L) eager attention probabilities of that layer;
    targets: the examples' ``token_targets``."""
    ids, labels = inputs["input_ids"], inputs["labels"]
    visual_ids = torch.tensor(visual_ids)
    total, count = ids.new_zeros((), dtype=torch.float32), 0
    for b, (ex, ex_targets) in enumerate(zip(examples, targets)):
        visual = torch.isin(ids[b], visual_ids).nonzero().squeeze(1)
        cells = answer_cells(ex, ex_targets)
        if cells.numel() != visual.numel():
            raise ValueError(f"{visual.numel()} visual tokens, {cells.numel()} cells")
        target = visual[cells]
        if target.numel() == 0:
            continue
        query = ids.shape[1] - int((labels[b] != -100).sum()) - 1  # the position that emits the answer
        share = count_share(len(ex.details["objects"])) if ex.kind == "count" else 1.0
        floor = -(share * math.log(share) + (1 - share) * math.log(1 - share)) if share < 1 else 0.0
        for layer, w in weights.items():
            row = w[b, ATTENTION_HEAD, query]
            mass = row[target].sum()
            loss = -share * torch.log(mass + 1e-6)
            if share < 1:  # the text: every position the query sees that is not visual
                text = (row.sum() - row[visual].sum()).clamp_min(0.0)
                loss = loss - (1 - share) * torch.log(text + 1e-6)
            total = total + loss - floor
            count += 1
    return total / max(count, 1)


class TokenProbe(torch.nn.Module):
    """Linear heads on the visual tokens (training only; not saved with the model)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, n) for name, n in HEADS.items()})

    def loss(self, tokens: torch.Tensor, targets: Sequence[dict]) -> torch.Tensor:
        """Weighted cross-entropy of every head over every visual token (``tokens``: the
        merger's output, (sum of tokens, hidden), in example order; ``targets``: the
        examples' ``token_targets``)."""
        labels = {name: torch.cat([t[name].flatten() for t in targets]) for name in HEADS}
        if labels["colour"].numel() != tokens.shape[0]:
            raise ValueError(f"{tokens.shape[0]} visual tokens, {labels['colour'].numel()} targets")
        something = (labels["colour"] > 0) | (labels["digit"] > 0)
        weight = 1.0 + (OBJECT_WEIGHT - 1.0) * something.float()
        total = tokens.new_zeros(())
        for name, head in self.heads.items():
            ce = torch.nn.functional.cross_entropy(head(tokens), labels[name], reduction="none")
            total = total + (ce * weight).sum() / weight.sum()
        return total

    @torch.no_grad()
    def accuracy(self, tokens: torch.Tensor, targets: Sequence[dict]) -> dict[str, float]:
        """Per head: share of the cells holding something (label > 0) predicted right."""
        out = {}
        for name, head in self.heads.items():
            labels = torch.cat([t[name].flatten() for t in targets])
            mask = labels > 0
            if mask.any():
                out[name] = float((head(tokens[mask]).argmax(-1) == labels[mask]).float().mean())
        return out


@torch.no_grad()
def answer_accuracy(model, processor, examples: Sequence[synthetic.Example], batch_size: int = 32) -> dict:
    """Share of ``examples`` whose greedy answer is right, overall and per kind: every
    answer token is predicted from the prompt plus the answer's earlier tokens, which
    for a greedy decoder is the same as generating the answer."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        inputs = encode(processor, chunk, with_answers=True)
        labels = inputs.pop("labels")
        predicted = model(**inputs).logits[:, :-1].argmax(-1)
        for b, ex in enumerate(chunk):
            scored = labels[b, 1:] != -100
            hits.setdefault(ex.kind, []).append(bool((predicted[b][scored] == labels[b, 1:][scored]).all()))
    model.train()
    out = {kind: sum(h) / len(h) for kind, h in sorted(hits.items())}
    out["all"] = sum(sum(h) for h in hits.values()) / sum(len(h) for h in hits.values())
    return out


def batch_indices(step: int, batch_size: int) -> list[int]:
    """Train-split indices of step ``step``'s batch. One step in ``len(KINDS)`` takes the
    next clips ("moved" examples), the others the next images of the other kinds in
    turn, so a batch never pads 144-token images to the length of a 256-token clip and
    every kind gets the same share of the data."""
    kinds = len(synthetic.KINDS)
    video = synthetic.KINDS.index("moved")
    if step % kinds == kinds - 1:
        first = (step // kinds) * batch_size
        return [video + kinds * (first + i) for i in range(batch_size)]
    image_step = step - step // kinds
    first = image_step * batch_size
    per_cycle = kinds - 1  # image kinds per cycle of train indices
    return [(j // per_cycle) * kinds + [k for k in range(kinds) if k != video][j % per_cycle]
            for j in range(first, first + batch_size)]


# Curriculum: objects start START_SCALE times their test size and shrink linearly to it
# over the first CURRICULUM share of the steps. With small objects from the start, the
# model sits at chance for hundreds of steps (nothing tells it which of 144 tokens to
# read); large ones teach it to read visual tokens within tens of steps.
START_SCALE = 2.0
CURRICULUM = 0.3


def curriculum_scale(step: int, steps: int) -> float:
    """Object scale of step ``step`` (2 -> 1 over the first 30% of the steps, then 1)."""
    return 1.0 + (START_SCALE - 1.0) * max(0.0, 1.0 - step / (CURRICULUM * steps))


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine to 5% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out: Path, *, steps: int, batch_size: int, lr: float, warmup: int, seed: int, threads: int,
          eval_every: int, eval_size: int, aux_weight: float = 1.0, attention_weight: float = 1.0,
          vision_steps: int = 0) -> dict:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model, processor = synth.build(seed)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters; %d steps of %d examples", params / 1e6, steps, batch_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98), eps=1e-8)
    probe = TokenProbe(model.config.text_config.hidden_size)
    captured: list[torch.Tensor] = []
    hooks = [model.model.visual.merger.register_forward_hook(lambda _m, _i, out: captured.append(out))]
    attention: dict[int, torch.Tensor] = {}
    if attention_weight > 0:
        model.set_attn_implementation("eager")  # attention probabilities for the supervision
        for layer in ATTENTION_LAYERS:
            hooks.append(model.model.language_model.layers[layer].self_attn.register_forward_hook(
                lambda _m, _i, out, layer=layer: attention.__setitem__(layer, out[1])))
    visual_ids = (model.config.image_token_id, model.config.video_token_id)
    vision = {}
    if vision_steps:
        log.info("stage 1: vision tower + probe, %d steps", vision_steps)
        vision = pretrain_vision(model, processor, probe, steps=vision_steps, batch_size=batch_size, lr=lr)
        log.info("stage 1 probe accuracy on object cells: %s", " ".join(f"{k}={v:.2f}" for k, v in vision.items()))
    log.info("stage 2: the whole model, %d steps", steps)
    optimizer.add_param_group({"params": list(probe.parameters()), "weight_decay": 0.0})
    validation = [synthetic.example("validation", i) for i in range(eval_size)]
    history, start, smooth, train_acc = [], time.perf_counter(), None, None
    from tqdm import tqdm

    bar = tqdm(range(steps), desc="train", unit="step", dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup)
        scale = curriculum_scale(step, steps)
        batch = [synthetic.example("train", i, scale=scale) for i in batch_indices(step, batch_size)]
        targets = [token_targets(ex) for ex in batch]
        captured.clear()
        inputs = encode(processor, batch, with_answers=True)
        output = model(**inputs)
        answer_loss = output.loss
        look = attention_loss(attention, inputs, batch, targets, visual_ids) if attention_weight > 0 else 0.0
        with torch.no_grad():  # share of this batch answered right, teacher-forced
            labels, scored = inputs["labels"][:, 1:], inputs["labels"][:, 1:] != -100
            right = ((output.logits[:, :-1].argmax(-1) == labels) | ~scored).all(dim=1).float().mean().item()
        train_acc = right if train_acc is None else 0.95 * train_acc + 0.05 * right
        loss = answer_loss + aux_weight * probe.loss(captured[0], targets) + attention_weight * look
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        smooth = answer_loss.item() if smooth is None else 0.95 * smooth + 0.05 * answer_loss.item()
        look_value = look.item() if torch.is_tensor(look) else look
        bar.set_postfix(loss=f"{smooth:.3f}", look=f"{look_value:.2f}", train_acc=f"{train_acc:.2f}",
                        scale=f"{scale:.2f}")
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc = answer_accuracy(model, processor, validation)
            captured.clear()
            history.append({"step": step + 1, "scale": scale, "loss": smooth, "train_acc": train_acc,
                            "seconds": time.perf_counter() - start, **acc})
            log.info("step %d scale %.2f loss %.3f train_acc %.2f validation %s", step + 1, scale, smooth, train_acc,
                     " ".join(f"{k}={v:.2f}" for k, v in acc.items()))
    for hook in hooks:
        hook.remove()
    model.set_attn_implementation("sdpa")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    summary = {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "seed": seed,
               "aux_weight": aux_weight, "attention_weight": attention_weight, "vision_steps": vision_steps,
               "vision_probe_accuracy": vision,
               "threads": threads, "parameters": params, "seconds": round(time.perf_counter() - start, 1),
               "validation": history[-1] if history else {}, "history": history}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("saved to %s (%.0f s)", out, summary["seconds"])
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python jobs/train_tiny.py",
        description="Train the tiny Qwen2-VL 'tiny:qwen2_vl_synth' on the synthetic_fine train split "
                    "(CPU, reproducible) and save it with save_pretrained.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--steps", type=int, default=700, help="stage 2 optimizer steps (default 700)")
    parser.add_argument("--vision-steps", type=int, default=300,
                        help="stage 1 steps: vision tower + probe alone (default 300; 0 skips it)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up steps (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--aux-weight", type=float, default=1.0,
                        help="weight of the per-token probe loss (default 1; 0 turns it off)")
    parser.add_argument("--attention-weight", type=float, default=1.0,
                        help="weight of the attention supervision (default 1; 0 turns it off)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2; part of reproducibility)")
    parser.add_argument("--eval-every", type=int, default=100, help="validate every N steps (default 100)")
    parser.add_argument("--eval-size", type=int, default=100, help="validation examples (default 100)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "warmup", "threads", "eval_every", "eval_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.vision_steps < 0:
        parser.error("--vision-steps must be >= 0")
    if not args.lr > 0:
        parser.error("--lr must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, seed=args.seed,
          threads=args.threads, eval_every=args.eval_every, eval_size=args.eval_size, aux_weight=args.aux_weight,
          attention_weight=args.attention_weight, vision_steps=args.vision_steps)


if __name__ == "__main__":
    main()
