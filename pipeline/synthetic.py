"""``synthetic_fine``: generated pictures and clips whose answers hang on a few small details.

Every example is a pure function of ``(split, index)``: the same split and index give
the same pixels, question and answer on any machine. Splits are disjoint seed streams,
so the train split can be drawn from as long as training wants while validation and
test stay fixed::

    >>> ex = example("test", 0)
    >>> ex.kind, ex.question, ex.options, ex.answer
    ('colour', 'What colour is the small shape?', [], 'green')

Images are 336 x 336 pixels: 12 x 12 LLM tokens for a Qwen2-VL model (28 px per
token after the 2 x 2 merge). Each question is about objects of 18-22 px (a digit
about 19 px tall) centred on cells of that token grid, so its answer lives in one of
those 144 tokens (one per object), on a cluttered background of faint
blobs that fill the rest. Clips are 8 frames of 224 x 224 (4 x 8 x 8 tokens).

Kinds (``KINDS``, taken in turn: example ``i`` is of kind ``KINDS[i % 5]``):

=========  ==================================================================  ===============
kind       question                                                            answer
=========  ==================================================================  ===============
colour     the colour of the one small shape                                   a colour (of 8)
shape      the shape of the one small object                                   A-D (fixed)
count      how many small shapes there are (1-4, same colour and shape)        a digit
digit      the digit written small in one corner                               a digit
moved      which of three shapes moves between the frames of a clip (video)    a colour (of 8)
=========  ==================================================================  ===============

Chance: 12.5% for colours, 25% for shapes and counts, 10% for digits. The shape
options are always "A. circle B. square C. triangle D. cross", so the letter stands
for the shape (as in POPE's yes/no), not for an option list that changes per question.

``scale`` (default 1) enlarges the objects and the digit: training starts with large
ones and shrinks them to scale 1 (a curriculum; see jobs/train_tiny.py). The test and
validation splits are always at scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

IMAGE_SIZE = 336
VIDEO_SIZE = 224
VIDEO_FRAMES = 8
VIDEO_FPS = 4
KINDS = ("colour", "shape", "count", "digit", "moved")
SPLITS = {"train": 0, "validation": 1, "test": 2}

# Saturated colours, well apart from each other and from the pale backgrounds.
COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 220), "yellow": (240, 200, 0),
    "purple": (140, 40, 190), "orange": (245, 120, 0), "black": (20, 20, 20), "pink": (240, 80, 170),
}
SHAPES = ("circle", "square", "triangle", "cross")  # also the shape question's options, A-D
CORNERS = ("top left", "top right", "bottom left", "bottom right")
OBJECT_SIZE = (18, 22)  # side of a small object in pixels, inclusive range, at scale 1


@dataclass
class Example:
    """One generated question.

    kind:      one of ``KINDS``.
    question:  the question text (no options, no answer-format line).
    options:   the option texts in letter order, or [] for a short answer.
    answer:    the gold answer: an option letter, or the short answer text.
    details:   what was drawn where (objects as (shape, colour, x, y, side), ...).
    image:     the picture (kinds other than "moved"), else None.
    frames:    (8, 224, 224, 3) uint8 clip for "moved", else None.
    """

    kind: str
    question: str
    options: list[str]
    answer: str
    image: Optional[Image.Image] = None
    frames: Optional[np.ndarray] = None
    details: dict = field(default_factory=dict)


def prompt(ex: Example) -> str:
    """The user text the ``synthetic_fine`` task shows the model for ``ex``."""
    return prompt_text(ex.question, ex.options)


def prompt_text(question: str, options: list[str]) -> str:
    """The question, then lettered options and the multiple-choice line, or the
    short-answer line when there are no options."""
    from pipeline.tasks.common import LETTERS, MC_INSTRUCTION, SHORT_ANSWER

    if options:
        return "\n".join([question, *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options)), MC_INSTRUCTION])
    return f"{question}\n{SHORT_ANSWER}"


def example(split: str, index: int, *, scale: float = 1.0) -> Example:
    """The ``index``-th example of ``split`` ("train", "validation" or "test");
    ``scale`` > 1 draws the same question with larger objects (training curriculum)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if not 1.0 <= scale <= 4.0:
        raise ValueError(f"scale must be in [1, 4], got {scale}")
    rng = np.random.default_rng([SPLITS[split], index, 20251202])
    kind = KINDS[index % len(KINDS)]
    return _MAKERS[kind](rng, scale)


# ---------------------------------------------------------------- drawing


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A pale, low-contrast scene: a colour gradient and faint large blobs (drawn at a
    quarter of the size, blurred and scaled up), plus pixel noise."""
    small = size // 4
    base = rng.uniform(170, 235, size=3)
    tilt = rng.uniform(-25, 25, size=(2, 3))
    ys, xs = np.mgrid[0:small, 0:small] / small
    pixels = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        r = int(rng.integers(small // 8, small // 3))
        cx, cy = rng.integers(0, small, size=2)
        shade = tuple(int(v) for v in np.clip(base + rng.uniform(-30, 30, size=3), 0, 255))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade)
    image = image.filter(ImageFilter.GaussianBlur(radius=1.5)).resize((size, size), Image.BILINEAR)
    noise = rng.integers(-6, 7, size=(size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, side: int, colour: str) -> None:
    """``shape`` filling the ``side``-pixel square at (x, y)."""
    fill, x1, y1 = COLOURS[colour], x + side - 1, y + side - 1
    if shape == "circle":
        draw.ellipse([x, y, x1, y1], fill=fill)
    elif shape == "square":
        draw.rectangle([x, y, x1, y1], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y1), (x1, y1), ((x + x1) / 2, y)], fill=fill)
    elif shape == "diamond":
        cx, cy = (x + x1) / 2, (y + y1) / 2
        draw.polygon([(cx, y), (x1, cy), (cx, y1), (x, cy)], fill=fill)
    elif shape == "cross":
        bar = max(side // 3, 2)
        lo = x + (side - bar) // 2
        draw.rectangle([lo, y, lo + bar - 1, y1], fill=fill)
        lo = y + (side - bar) // 2
        draw.rectangle([x, lo, x1, lo + bar - 1], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


CELL = 28  # pixels per LLM token side for Qwen2-VL (patch 14 x merge 2)


def cell_places(rng: np.random.Generator, count: int, size: int, side: int) -> list[tuple[int, int]]:
    """``count`` top-left corners for ``side``-px objects, each centred (+-2 px) on its own
    cell of the 28 px token grid, cells at least one cell apart. At scale 1 an object
    lies inside one token's cell, so what a question asks about lives in that token."""
    grid = size // CELL
    gap = -(-side // CELL) + 1  # cells from centre to centre: the object's span plus one
    for _ in range(1000):
        cells = [divmod(int(c), grid) for c in rng.choice(grid * grid, size=count, replace=False)]
        if all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= gap for i, a in enumerate(cells) for b in cells[:i]):
            break
    else:
        raise RuntimeError("could not place the objects apart")  # not reached for the sizes used here
    spots = []
    for r, c in cells:
        jx, jy = (int(v) for v in rng.integers(-2, 3, size=2))
        x = min(max(c * CELL + (CELL - side) // 2 + jx, 0), size - side)
        y = min(max(r * CELL + (CELL - side) // 2 + jy, 0), size - side)
        spots.append((x, y))
    return spots


def _side(rng: np.random.Generator, scale: float) -> int:
    """A random object side in ``OBJECT_SIZE`` scaled by ``scale``."""
    return int(rng.integers(round(OBJECT_SIZE[0] * scale), round(OBJECT_SIZE[1] * scale) + 1))


def _pick(rng: np.random.Generator, values, k: int = 1) -> list:
    return [values[i] for i in rng.choice(len(values), size=k, replace=False)]


# ---------------------------------------------------------------- kinds


def _one_object(rng: np.random.Generator, scale: float) -> tuple[Image.Image, tuple]:
    image = background(rng, IMAGE_SIZE)
    colour, shape, side = _pick(rng, list(COLOURS))[0], _pick(rng, SHAPES)[0], _side(rng, scale)
    (x, y), = cell_places(rng, 1, IMAGE_SIZE, side)
    draw_shape(ImageDraw.Draw(image), shape, x, y, side, colour)
    return image, (shape, colour, x, y, side)


def _colour(rng: np.random.Generator, scale: float) -> Example:
    image, obj = _one_object(rng, scale)
    return Example("colour", "What colour is the small shape?", [], obj[1], image=image,
                   details={"objects": [obj]})


def _shape(rng: np.random.Generator, scale: float) -> Example:
    image, obj = _one_object(rng, scale)
    return Example("shape", "What shape is the small object?", list(SHAPES), "ABCD"[SHAPES.index(obj[0])],
                   image=image, details={"objects": [obj]})


def _count(rng: np.random.Generator, scale: float) -> Example:
    image = background(rng, IMAGE_SIZE)
    n = int(rng.integers(1, 5))
    colour, shape, side = _pick(rng, list(COLOURS))[0], _pick(rng, SHAPES)[0], _side(rng, scale)
    draw = ImageDraw.Draw(image)
    spots = cell_places(rng, n, IMAGE_SIZE, side)
    for x, y in spots:
        draw_shape(draw, shape, x, y, side, colour)
    return Example("count", "How many small shapes are there in the image?", [], str(n), image=image,
                   details={"objects": [(shape, colour, x, y, side) for x, y in spots]})


FONT_SIZE = 26


def _digit(rng: np.random.Generator, scale: float) -> Example:
    image = background(rng, IMAGE_SIZE)
    digit, corner = int(rng.integers(10)), int(rng.integers(len(CORNERS)))
    font = ImageFont.load_default(size=round(FONT_SIZE * scale))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    w, h = right - left, bottom - top
    span = max(CELL, max(w, h) + 4)  # the corner cell (a larger square while scale > 1)
    jx, jy = (int(v) for v in rng.integers(-2, 3, size=2))
    x = (span - w) // 2 + jx if corner in (0, 2) else IMAGE_SIZE - span + (span - w) // 2 + jx
    y = (span - h) // 2 + jy if corner in (0, 1) else IMAGE_SIZE - span + (span - h) // 2 + jy
    x, y = min(max(x, 0), IMAGE_SIZE - w), min(max(y, 0), IMAGE_SIZE - h)
    draw.text((x - left, y - top), str(digit), font=font, fill=COLOURS["black"])
    return Example("digit", "What digit is written in a corner of the image?", [], str(digit), image=image,
                   details={"digit": digit, "corner": CORNERS[corner], "box": (x, y, w, h)})


def mover_offset(movers: dict, index: int, t: int) -> tuple[int, int]:
    """Pixel offset of object ``index`` in frame ``t``: a mover ``(dx, dy), step`` is
    ``step`` px along its direction in odd frames and back home in even ones."""
    if index not in movers:
        return 0, 0
    (dx, dy), step = movers[index]
    return dx * step * (t % 2), dy * step * (t % 2)


def _moved(rng: np.random.Generator, scale: float) -> Example:
    """Three shapes of different colours on the 8 x 8 token grid of a clip; one hops to
    the next cell and back every frame (so every pair of frames, one temporal patch,
    sees it move), the others stand still. Clips are always drawn at scale 1."""
    size, n, grid = VIDEO_SIZE, 3, VIDEO_SIZE // CELL
    colours, shapes = _pick(rng, list(COLOURS), n), [_pick(rng, SHAPES)[0] for _ in range(n)]
    sides = [_side(rng, 1.0) for _ in range(n)]
    mover = int(rng.integers(n))
    for _ in range(1000):
        spots = cell_places(rng, n, size, max(sides))
        dx, dy = [(1, 0), (-1, 0), (0, 1), (0, -1)][int(rng.integers(4))]
        x, y = spots[mover]
        tx, ty = x + dx * CELL, y + dy * CELL  # where it hops to
        inside = 0 <= tx <= size - sides[mover] and 0 <= ty <= size - sides[mover]
        clear = all(max(abs(tx - sx), abs(ty - sy)) >= 2 * CELL for i, (sx, sy) in enumerate(spots) if i != mover)
        if inside and clear:
            break
    else:
        raise RuntimeError("could not lay out the clip")  # not reached for the sizes used here
    movers = {mover: ((dx, dy), CELL)}
    base = background(rng, size)
    frames = np.empty((VIDEO_FRAMES, size, size, 3), np.uint8)
    for t in range(VIDEO_FRAMES):
        frame = base.copy()
        draw = ImageDraw.Draw(frame)
        for i, (sx, sy) in enumerate(spots):
            ox, oy = mover_offset(movers, i, t)
            draw_shape(draw, shapes[i], sx + ox, sy + oy, sides[i], colours[i])
        frames[t] = np.asarray(frame)
    objects = [(shapes[i], colours[i], sx, sy, sides[i]) for i, (sx, sy) in enumerate(spots)]  # at frame 0
    return Example("moved", "Which shape moves during the video? Answer with its colour.", [], colours[mover],
                   frames=frames, details={"mover": colours[mover], "objects": objects, "movers": movers})


_MAKERS = {"colour": _colour, "shape": _shape, "count": _count, "digit": _digit, "moved": _moved}
