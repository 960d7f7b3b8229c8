"""Small sample sets in each benchmark's own layout, for tests and demos without the hub.

    python -m pipeline.samples --out DIR [--tasks egoschema mme ...] [--per-task 4]
                               [--frames-per-video 24] [--corrupt] [--seed 0]
                               [--layout spec|repo|lmms-eval]

Each task gets ``DIR/<task>/`` holding what a user's local copy holds
(../shared/spec/benchmarks.md): ``data.parquet`` with the benchmark's columns (images
as HF ``Image`` features, so they read back as PIL images) and, for the video tasks,
real mp4 files at the spec's relative paths, e.g.
``DIR/egoschema/egoschema/videos/{video_idx}.mp4``. GQA mirrors the hub repository:
``DIR/gqa/testdev_balanced_instructions/testdev-00000-of-00001.parquet`` and
``DIR/gqa/testdev_balanced_images/testdev-00000-of-00001.parquet``.

The video tasks can also be written in the two other layouts their files are found in
(``pipeline/tasks/_media.py``), e.g. for Video-MME:

- ``--layout repo``: the hub repository downloaded with its zips unzipped in place,
  ``DIR/videomme/videomme/test-00000-of-00001.parquet``, ``DIR/videomme/data/{videoID}.mp4``,
  ``DIR/videomme/subtitle/{videoID}.srt``; pass ``--data DIR/videomme``.
- ``--layout lmms-eval``: ``DIR/videomme`` is a Hugging Face home as lmms-eval leaves it:
  the repository in the hub cache
  (``hub/datasets--lmms-lab--Video-MME/snapshots/<rev>/videomme/test-00000-of-00001.parquet``)
  and the unzipped files in ``videomme/data/``, ``videomme/subtitle/``; pass the snapshot
  folder as ``--data`` with ``HF_HOME=DIR/videomme``.

The pictures and videos show coloured shapes (videos: a square moving left or right)
and the questions ask about them, so the answers can be read off the media. The
content is a function of ``--seed`` alone. ``--corrupt`` adds two rows per task: one
whose image is garbage bytes or whose video is cut in half, and one whose image or
video is missing (for GQA: no row with its ``imageId`` in the images config).
"""

from __future__ import annotations

import argparse
import random
import uuid
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (235, 205, 30),
           "purple": (150, 60, 200)}
SHAPES = ("square", "circle", "triangle")
VIDEO_SIZE = (96, 64)  # (width, height); even, as yuv420p needs
VIDEO_FPS = 8
LAYOUTS = ("spec", "repo", "lmms-eval")  # where the video tasks' files go (module docstring)
SNAPSHOT_REVISION = "0" * 40  # the commit of the fabricated hub-cache snapshot (--layout lmms-eval)
GARBAGE = b"\x89PNG\r\n\x1a\n this is not an image" + bytes(range(256)) * 4  # a PNG signature, then junk


# ---------------------------------------------------------------- media


def shape_image(colour: str, shape: str, *, size: int = 96, text: Optional[str] = None,
                rng: Optional[random.Random] = None) -> Image.Image:
    """One ``colour`` ``shape`` on a light background, at a random place; ``text`` drawn below."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (size, size), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    side = size // 3
    x, y = rng.randint(4, size - side - 4), rng.randint(4, size // 2 - 4)
    box = [x, y, x + side, y + side]
    fill = COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=fill)
    if text:
        draw.text((6, size - 22), text, fill=(0, 0, 0))
    return image


def video_frames(colour: str, direction: str, n_frames: int, size: tuple[int, int] = VIDEO_SIZE) -> np.ndarray:
    """(n_frames, H, W, 3) uint8: a ``colour`` square crossing the frame to the
    ``direction`` ("left" or "right") and a grey bar growing along the bottom, so every
    frame differs from the others."""
    width, height = size
    side = height // 3
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        progress = t / max(n_frames - 1, 1)
        x = int(progress * (width - side)) if direction == "right" else int((1 - progress) * (width - side))
        frame = frames[t]
        frame[:] = (30, 30, 40)
        frame[height // 3: height // 3 + side, x: x + side] = COLOURS[colour]
        frame[height - 4:, : max(1, int(progress * width))] = (160, 160, 160)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = VIDEO_FPS) -> Path:
    """Encode (N, H, W, 3) uint8 frames as H.264 (mpeg4 when libx264 is missing), yuv420p;
    the container follows the suffix (.mp4, .MP4, .mkv)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    fmt = "matroska" if path.suffix.lower() == ".mkv" else "mp4"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path: Path, cues: list[tuple[float, float, str]]) -> Path:
    """An SRT file; texts wrapped in the ``<font>`` tag Video-MME's files use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = [f'{i}\n{_srt_time(a)} --> {_srt_time(b)}\n<font color="white" size=".72c">{text}</font>\n'
              for i, (a, b, text) in enumerate(cues, 1)]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


# ---------------------------------------------------------------- rows


class _SampleSet:
    """What one task's writer needs: the folder, a seeded rng, how many rows, which
    rows are broken (``kind(i)`` is "ok", "corrupt" or "missing"), and for the video
    tasks where the layout puts rows and media."""

    def __init__(self, root: Path, n: int, seed: int, frames: int, corrupt: bool, split: str = "test",
                 task=None, layout: str = "spec"):
        self.root, self.n, self.frames, self.split = root, n, frames, split
        self.task, self.layout = task, layout
        self.rng = random.Random(seed)
        self.total = n + (2 if corrupt else 0)

    @property
    def data(self) -> Path:
        """The folder to read the rows from (``--data``)."""
        if self.layout != "lmms-eval":
            return self.root
        hub_id = self.task.hub[0][0]
        return self.root / "hub" / f"datasets--{hub_id.replace('/', '--')}" / "snapshots" / SNAPSHOT_REVISION

    def media_path(self, media, filename: str) -> str:
        """Where ``filename`` of a task's ``MediaLayout`` (``media``) goes, relative to the
        root: the repo's archive folder in the repo layout, else under the benchmark's folder
        (the spec's local copy, and lmms-eval's ``$HF_HOME/<cache_dir>``)."""
        if self.layout == "repo":
            return str(Path(media.folder) / filename)
        return str(Path(media.cache_dir) / media.folder / filename)

    def write_rows(self, columns: dict) -> None:
        """A video task's rows: ``data.parquet`` (spec), or the hub repository's file
        ``<config>/<split>-00000-of-00001.parquet`` in the download (repo) or in the hub
        cache's snapshot (lmms-eval, with the ``refs/main`` that names it)."""
        if self.layout == "spec":
            _write_parquet(self.root / "data.parquet", columns)
            return
        _, config, split = self.task.hub[0]
        _write_parquet(self.data / config / f"{split}-00000-of-00001.parquet", columns)
        if self.layout == "lmms-eval":
            (self.data.parent.parent / "refs").mkdir(parents=True, exist_ok=True)
            (self.data.parent.parent / "refs" / "main").write_text(SNAPSHOT_REVISION)

    def kind(self, i: int) -> str:
        return "ok" if i < self.n else ("corrupt" if i == self.n else "missing")

    def pick(self, values, k: int = 1):
        return self.rng.sample(list(values), k) if k > 1 else self.rng.choice(list(values))

    def image(self, i: int, colour: str, shape: str, text: Optional[str] = None):
        """The image cell of row i: a PIL image, garbage bytes, or None."""
        if self.kind(i) != "ok":
            return self.picture(i, None)
        return shape_image(colour, shape, text=text, rng=self.rng)

    def picture(self, i: int, image):
        """Row i's image cell for ``image``: itself, garbage bytes, or None (missing)."""
        return {"ok": image, "corrupt": {"bytes": GARBAGE, "path": None}, "missing": None}[self.kind(i)]

    def video(self, i: int, filename: str, colour: str, direction: str) -> None:
        """Row i's video ``filename`` of a square moving to ``direction``, where the layout
        puts the task's videos."""
        frames = video_frames(colour, direction, self.frames) if self.kind(i) != "missing" else None
        self.clip(i, self.media_path(self.task.videos, filename), frames)

    def clip(self, i: int, relative: str, frames: Optional[np.ndarray], fps: int = VIDEO_FPS) -> None:
        """Row i's video of ``frames`` at ``root/relative``: real, cut in half (as an
        interrupted download leaves it), or not written."""
        path, kind = self.root / relative, self.kind(i)
        if kind != "missing":
            write_video(path, frames, fps)
        if kind == "corrupt":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))


def _write_parquet(path: Path, columns: dict, image_columns: tuple[str, ...] = (), image_lists: tuple[str, ...] = ()):
    """``columns`` as one parquet file; image columns as HF ``Image`` (or list of
    ``Image``) features, so they read back as images, the rest typed by Arrow."""
    import pyarrow as pa
    from datasets import Dataset, Features, Image as ImageFeature, List

    plain = {k: v for k, v in columns.items() if k not in image_columns + image_lists}
    features = Features.from_arrow_schema(pa.table(plain).schema)
    features.update({name: ImageFeature() for name in image_columns})
    features.update({name: List(ImageFeature()) for name in image_lists})
    features = Features({name: features[name] for name in columns})  # keep the column order
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=Features(features)).to_parquet(str(path))


def _video_question(s: _SampleSet, n_options: int = 5) -> tuple[str, str, list[str]]:
    """(the square's colour, its direction, ``n_options`` colours in random order, one
    of them the square's) for one video row."""
    colour, direction = s.pick(COLOURS), s.pick(("left", "right"))
    options = s.pick([c for c in COLOURS if c != colour], n_options - 1) + [colour]
    s.rng.shuffle(options)
    return colour, direction, options


def _egoschema(s: _SampleSet) -> None:
    rows = {k: [] for k in ("question_idx", "question", "video_idx", "option", "answer")}
    for i in range(s.total):
        colour, direction, options = _video_question(s)
        video_idx = s.uid()
        ext = ".MP4" if i == 1 else ".mp4"  # the spec allows both
        s.video(i, f"{video_idx}{ext}", colour, direction)
        rows["question_idx"].append(s.uid())
        rows["question"].append("What colour is the square that moves across the video?")
        rows["video_idx"].append(video_idx)
        rows["option"].append([f"{l}. {c}" for l, c in zip("ABCDE", options)])
        rows["answer"].append(str(options.index(colour)))  # the hub stores the index as a string
    s.write_rows(rows)


def _nextqa(s: _SampleSet) -> None:
    rows = {k: [] for k in ("video", "frame_count", "width", "height", "question", "answer", "qid", "type",
                            "a0", "a1", "a2", "a3", "a4")}
    for i in range(s.total):
        colour, direction, options = _video_question(s)
        video = 4_000_000_000 + s.rng.randrange(10**8)
        s.video(i, f"{video}{'.MP4' if i == 1 else '.mp4'}", colour, direction)  # lmms-eval tries both
        if i % 2 == 0:
            question, answer, qtype = "what colour is the square", options.index(colour), "DO"
        else:
            options = ["moves left", "moves right", "stays still", "jumps up", "spins around"]
            question, answer, qtype = "how does the square move", options.index(f"moves {direction}"), "TN"
        rows["video"].append(video)
        rows["frame_count"].append(s.frames)
        rows["width"].append(VIDEO_SIZE[0])
        rows["height"].append(VIDEO_SIZE[1])
        rows["question"].append(question)
        rows["answer"].append(answer)
        rows["qid"].append(i)
        rows["type"].append(qtype)
        for k, option in enumerate(options):
            rows[f"a{k}"].append(option)
    s.write_rows(rows)


def _videomme(s: _SampleSet) -> None:
    rows = {k: [] for k in ("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id",
                            "task_type", "question", "options", "answer")}
    seconds = s.frames / VIDEO_FPS
    for i in range(s.total):
        colour, direction, options = _video_question(s, 4)
        video_id = "".join(s.rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
                           for _ in range(11))
        ext = ".mkv" if i == 1 else ".mp4"  # the spec allows .mp4, .MP4 and .mkv
        s.video(i, f"{video_id}{ext}", colour, direction)
        third = seconds / 3
        write_srt(s.root / s.media_path(s.task.subtitles, f"{video_id}.srt"),
                  [(0.0, third, "Look at the square."), (third, 2 * third, f"It is {colour}."),
                   (2 * third, seconds, f"It moves to the {direction}.")])
        rows["video_id"].append(f"{i + 1:03d}")
        rows["duration"].append(("short", "medium", "long")[i % 3])
        rows["domain"].append("Knowledge")
        rows["sub_category"].append("Geography")  # one of lmms-eval's SUB_CATEGORIES
        rows["url"].append(f"https://www.youtube.com/watch?v={video_id}")
        rows["videoID"].append(video_id)
        rows["question_id"].append(f"{i + 1:03d}-1")
        rows["task_type"].append("Object Recognition")
        rows["question"].append("What colour is the moving square?")
        rows["options"].append([f"{l}. {c.capitalize()}." for l, c in zip("ABCD", options)])
        rows["answer"].append("ABCD"[options.index(colour)])
    s.write_rows(rows)


def _egoplan(s: _SampleSet) -> None:
    rows = {k: [] for k in ("sample_id", "video_id", "task_goal", "question", "choice_a", "choice_b", "choice_c",
                            "choice_d", "golden_choice_idx")}
    for i in range(s.total):
        colour, direction, options = _video_question(s, 4)
        sample_id = 1000 + i
        ext = ".MP4" if i == 1 else ".mp4"
        s.video(i, f"{sample_id}{ext}", colour, direction)
        goal = "sorting the blocks by colour" if i % 2 else "sort the blocks by colour"
        rows["sample_id"].append(sample_id)
        rows["video_id"].append(s.uid())
        rows["task_goal"].append(goal)
        rows["question"].append(f"Considering the progress shown in the video, what action should I take next "
                                f"in order to {goal}?")
        for letter, option in zip("abcd", options):
            rows[f"choice_{letter}"].append(f"pick up the {option} square")
        rows["golden_choice_idx"].append("ABCD"[options.index(colour)])
    s.write_rows(rows)


def _mme(s: _SampleSet) -> None:
    rows = {k: [] for k in ("question_id", "image", "question", "answer", "category")}
    for i in range(s.total):
        if i % 2 == 0:  # two questions per image, as in MME
            colour, shape = s.pick(COLOURS), s.pick(SHAPES)
            other = s.pick([c for c in COLOURS if c != colour])
            image, category = s.image(i, colour, shape), ("color", "existence")[i // 2 % 2]
            qid = f"{category}/{i // 2:04d}.png"
            asks = [(colour, "Yes"), (other, "No")]
        elif s.kind(i) != "ok":  # a broken row never shares the image of a good one
            image = s.image(i, colour, shape)
        ask, answer = asks[i % 2]
        rows["question_id"].append(qid)
        rows["image"].append(image)
        rows["question"].append(f"Is there a {ask} {shape} in the image? Please answer yes or no.")
        rows["answer"].append(answer)
        rows["category"].append(category)
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _pope(s: _SampleSet) -> None:
    rows = {k: [] for k in ("question_id", "question", "answer", "image_source", "image", "category")}
    for i in range(s.total):
        colour, shape = s.pick(COLOURS), s.pick(SHAPES)
        asked, answer = (shape, "yes") if i % 2 == 0 else (s.pick([x for x in SHAPES if x != shape]), "no")
        rows["question_id"].append(str(i + 1))
        rows["question"].append(f"Is there a {asked} in the image?")
        rows["answer"].append(answer)
        rows["image_source"].append(f"COCO_val2014_{i:012d}")
        rows["image"].append(s.image(i, colour, shape))
        rows["category"].append(("adversarial", "popular", "random")[i % 3])
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _gqa(s: _SampleSet) -> None:
    questions = {k: [] for k in ("id", "imageId", "question", "answer", "fullAnswer")}
    images = {"id": [], "image": []}
    for i in range(s.total):
        colour, shape = s.pick(COLOURS), s.pick(SHAPES)
        image_id = f"n{100000 + i}"
        questions["id"].append(str(20000000 + i))
        questions["imageId"].append(image_id)
        questions["question"].append(f"What colour is the {shape}?")
        questions["answer"].append(colour)
        questions["fullAnswer"].append(f"The {shape} is {colour}.")
        if s.kind(i) != "missing":  # a missing image: no row to join with
            images["id"].append(image_id)
            images["image"].append(s.image(i, colour, shape))
    name = "testdev-00000-of-00001.parquet"
    _write_parquet(s.root / "testdev_balanced_instructions" / name, questions)
    _write_parquet(s.root / "testdev_balanced_images" / name, images, image_columns=("image",))


def _mmbench(s: _SampleSet) -> None:
    rows = {k: [] for k in ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
                            "source", "L2-category", "split")}
    for i in range(s.total):
        if i % 2 == 0:  # a question and its circular shift share index % 1,000,000
            colour, shape = s.pick(COLOURS), s.pick(SHAPES)
            options = s.pick([c for c in COLOURS if c != colour], 3) + [colour]
            s.rng.shuffle(options)
            image = s.image(i, colour, shape)
        else:
            options = options[1:] + options[:1]
            image = s.image(i, colour, shape) if s.kind(i) != "ok" else image  # broken rows: their own
        rows["index"].append(i // 2 + 1_000_000 * (i % 2))
        rows["question"].append(f"What colour is the {shape}?")
        rows["hint"].append(None if i % 4 < 2 else "The picture shows one shape.")
        for letter, option in zip("ABCD", options):
            rows[letter].append(option)
        rows["answer"].append("ABCD"[options.index(colour)])
        rows["category"].append("attribute_recognition")
        rows["image"].append(image)
        rows["source"].append("samples")
        rows["L2-category"].append("fine-grained_perception (instance-level)")
        rows["split"].append("dev")
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _scienceqa_img(s: _SampleSet) -> None:
    rows = {k: [] for k in ("image", "question", "choices", "answer", "hint", "task", "grade", "subject", "topic",
                            "category", "skill", "lecture", "solution")}
    for i in range(s.total):
        colour, shape = s.pick(COLOURS), s.pick(SHAPES)
        choices = s.pick(SHAPES, 2 + i % 2)  # ScienceQA has 2 to 5 choices
        if shape not in choices:
            choices[s.rng.randrange(len(choices))] = shape
        rows["image"].append(s.image(i, colour, shape))
        rows["question"].append("Which shape is in the picture?")
        rows["choices"].append(choices)
        rows["answer"].append(choices.index(shape))
        rows["hint"].append("" if i % 2 == 0 else f"The shape is {colour}.")
        rows["task"].append("closed choice")
        rows["grade"].append("grade2")
        rows["subject"].append("natural science")
        rows["topic"].append("geometry")
        rows["category"].append("Shapes")
        rows["skill"].append("Identify shapes")
        rows["lecture"].append("")
        rows["solution"].append(f"The picture shows a {shape}.")
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _text_answers(gold: str) -> list[str]:
    """Ten human answers: mostly ``gold``, a few spelled differently."""
    return [gold] * 7 + [gold.lower(), f"the {gold}", "unsure"]


def _textvqa(s: _SampleSet) -> None:
    rows = {k: [] for k in ("image_id", "question_id", "question", "answers", "image", "image_classes")}
    for i in range(s.total):
        colour, shape, word = s.pick(COLOURS), s.pick(SHAPES), s.pick(("STOP", "OPEN", "EXIT", "CAFE"))
        rows["image_id"].append(f"{i:016x}")
        rows["question_id"].append(34602 + i)
        rows["question"].append("what word is written at the bottom?")
        rows["answers"].append(_text_answers(word))
        rows["image"].append(s.image(i, colour, shape, text=word))
        rows["image_classes"].append(["Sign"])
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _ocrbench(s: _SampleSet) -> None:
    rows = {k: [] for k in ("dataset", "question", "question_type", "answer", "image")}
    for i in range(s.total):
        colour, shape, word = s.pick(COLOURS), s.pick(SHAPES), s.pick(("HELLO", "WORLD", "PIXEL", "TOKEN"))
        rows["dataset"].append("IIIT5K")
        rows["question"].append("what is written in the image?")
        rows["question_type"].append("Regular Text Recognition")
        rows["answer"].append([word])
        rows["image"].append(s.image(i, colour, shape, text=word))
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _seedbench(s: _SampleSet) -> None:
    rows = {k: [] for k in ("answer", "choice_a", "choice_b", "choice_c", "choice_d", "data_id", "data_type",
                            "question", "question_id", "question_type_id", "image")}
    for i in range(s.total):
        colour = s.pick(COLOURS)
        shape = s.pick(SHAPES)
        options = s.pick([c for c in COLOURS if c != colour], 3) + [colour]
        s.rng.shuffle(options)
        image = s.image(i, colour, shape)
        rows["answer"].append("ABCD"[options.index(colour)])
        for letter, option in zip("abcd", options):
            rows[f"choice_{letter}"].append(option)
        rows["data_id"].append(f"{i}.jpg")
        rows["data_type"].append("image")
        rows["question"].append(f"What colour is the {shape}?")
        rows["question_id"].append(str(i))
        rows["question_type_id"].append(2)
        rows["image"].append([] if image is None else [image])  # SEED-Bench stores a list of images
    _write_parquet(s.root / "data.parquet", rows, image_lists=("image",))


def _okvqa(s: _SampleSet) -> None:
    rows = {k: [] for k in ("question_id", "question", "answers", "image")}
    for i in range(s.total):
        colour, shape = s.pick(COLOURS), s.pick(SHAPES)
        rows["question_id"].append(2971475 + i)
        rows["question"].append("What colour is the shape?")
        rows["answers"].append(_text_answers(colour))
        rows["image"].append(s.image(i, colour, shape))
    _write_parquet(s.root / "data.parquet", rows, image_columns=("image",))


def _synthetic_fine(s: _SampleSet) -> None:
    """Rows 0..n-1 of the split (the content is a function of split and index alone,
    not of --seed: the trained tiny model's test set is the same everywhere)."""
    from pipeline import synthetic

    rows = {k: [] for k in ("id", "split", "kind", "question", "options", "answer", "image", "video")}
    for i in range(s.total):
        ex, uid = synthetic.example(s.split, i), f"{s.split}-{i:05d}"
        video = f"videos/{uid}.mp4" if ex.frames is not None else None
        if video:
            s.clip(i, video, ex.frames, fps=synthetic.VIDEO_FPS)
        image = s.picture(i, ex.image) if ex.image is not None else None
        for key, value in (("id", uid), ("split", s.split), ("kind", ex.kind), ("question", ex.question),
                           ("options", ex.options), ("answer", ex.answer), ("image", image), ("video", video)):
            rows[key].append(value)
    _write_parquet(s.root / f"{s.split}.parquet", rows, image_columns=("image",))


WRITERS: dict[str, Callable[[_SampleSet], None]] = {
    "egoschema": _egoschema, "nextqa": _nextqa, "videomme": _videomme, "videomme_subtitles": _videomme,
    "egoplan": _egoplan, "mme": _mme, "pope": _pope, "gqa": _gqa, "mmbench": _mmbench,
    "scienceqa_img": _scienceqa_img, "textvqa": _textvqa, "ocrbench": _ocrbench, "seedbench": _seedbench,
    "okvqa": _okvqa, "synthetic_fine": _synthetic_fine,
}
VIDEO_TASKS = ("egoschema", "nextqa", "videomme", "videomme_subtitles", "egoplan")


def write_task(task_name: str, out_dir, n: int = 4, *, frames_per_video: int = 3 * VIDEO_FPS,
               corrupt: bool = False, seed: int = 0, split: str = "test", layout: str = "spec") -> Path:
    """Write ``n`` rows (plus 2 broken ones with ``corrupt``) of ``task_name`` in its
    layout under ``out_dir/task_name``; returns the folder to read it from (the task's
    ``data``: ``out_dir/task_name`` itself, or for ``layout="lmms-eval"`` the hub-cache
    snapshot in it, to be read with ``HF_HOME=out_dir/task_name``). ``split`` only
    matters for synthetic_fine (train, validation or test); ``layout`` (one of
    :data:`LAYOUTS`) only for the video tasks. The content does not depend on the layout."""
    if task_name not in WRITERS:
        raise ValueError(f"no sample writer for {task_name!r}; known: {', '.join(WRITERS)}")
    if n < 1 or frames_per_video < 1:
        raise ValueError("n and frames_per_video must be >= 1")
    if layout not in LAYOUTS or (layout != "spec" and task_name not in VIDEO_TASKS):
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}; "
                         f"only the video tasks ({', '.join(VIDEO_TASKS)}) have other layouts than spec")
    from pipeline.tasks import get_task

    task = get_task(task_name) if task_name in VIDEO_TASKS else None
    root = Path(out_dir) / task_name
    task_seed = seed * 1_000_003 + zlib.crc32(task_name.encode())
    sample_set = _SampleSet(root, n, task_seed, frames_per_video, corrupt, split, task, layout)
    WRITERS[task_name](sample_set)
    return sample_set.data


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.samples",
        description="Write small sample sets of the benchmarks in their own on-disk layouts "
                    "(parquet with HF Image columns, mp4 videos, SRT subtitles) for tests and demos.",
    )
    parser.add_argument("--out", required=True, help="output folder; each task is written to OUT/<task>/")
    parser.add_argument("--tasks", nargs="+", choices=list(WRITERS), metavar="TASK",
                        help=f"tasks to write (default: all; the video tasks with --layout repo or lmms-eval): "
                             f"{' '.join(WRITERS)}")
    parser.add_argument("--per-task", type=int, default=4, help="rows per task (default 4)")
    parser.add_argument("--frames-per-video", type=int, default=3 * VIDEO_FPS,
                        help=f"frames in each generated video, at {VIDEO_FPS} fps (default {3 * VIDEO_FPS})")
    parser.add_argument("--corrupt", action="store_true",
                        help="also write, per task, one row with a garbage image or a half-written video "
                             "and one whose image or video is missing")
    parser.add_argument("--seed", type=int, default=0, help="content seed (default 0)")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="test",
                        help="split of synthetic_fine to write (default test; its content depends on "
                             "split and row alone)")
    parser.add_argument("--layout", choices=LAYOUTS, default="spec",
                        help="where the video tasks' rows and files go: spec (default: data.parquet and "
                             "<benchmark>/<folder>/ under OUT/<task>), repo (the hub repository downloaded, "
                             "its zips unzipped in place) or lmms-eval (OUT/<task> as the HF_HOME lmms-eval "
                             "leaves)")
    args = parser.parse_args(argv)
    if args.tasks is None:
        args.tasks = list(WRITERS) if args.layout == "spec" else list(VIDEO_TASKS)
    if args.layout != "spec" and set(args.tasks) - set(VIDEO_TASKS):
        parser.error(f"--layout {args.layout} is for the video tasks only ({' '.join(VIDEO_TASKS)})")
    import datasets

    datasets.disable_progress_bars()  # one line per task below says what was written
    for name in args.tasks:
        data = write_task(name, args.out, args.per_task, frames_per_video=args.frames_per_video,
                          corrupt=args.corrupt, seed=args.seed, split=args.split, layout=args.layout)
        root = Path(args.out) / name
        files = sorted(p for p in root.rglob("*") if p.is_file())
        videos = sum(p.suffix.lower() in (".mp4", ".mkv") for p in files)
        extra = f", {videos} video files" if videos or name in VIDEO_TASKS else ""
        broken = " (2 of them broken)" if args.corrupt else ""
        home = f"; read it with HF_HOME={root}" if args.layout == "lmms-eval" else ""
        print(f"{name}: {args.per_task + 2 * args.corrupt} rows{broken} -> {data} "
              f"({', '.join(str(p.relative_to(data)) for p in files if p.suffix == '.parquet')}{extra}{home})")


if __name__ == "__main__":
    main()
