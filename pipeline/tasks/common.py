"""Shared pieces of the benchmark tasks: reading rows, encoding images, prompt
fragments, the lenient answer parsers and the lmms-eval metrics several tasks share
(../shared/spec/benchmarks.md; the per-task extractors are in ``pipeline.tasks.extract``).

Pure functions on small values; ``datasets`` is the only reader, so a hub id (from
the local HF cache) and a local parquet/arrow/jsonl copy come back the same way,
with HF ``Image`` columns decoded to PIL images.
"""

from __future__ import annotations

import functools
import io
import re
import statistics
import string
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from pipeline.tasks.base import Sample, Task

SHORT_ANSWER = "Answer the question using a single word or phrase."
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# lmms-eval's `until` when a task's generation_kwargs name none (its TaskConfig
# fills in the few-shot delimiter, lmms_eval/api/task.py).
DEFAULT_UNTIL = ("\n\n",)

# A benchmark's id may sit under any of these owners (older and newer lmms-eval).
HUB_PREFIXES = ("lmms-lab/", "lmms-eval/", "lmms-lab-encoder/")
_LOCAL_FORMATS = (("parquet", "parquet"), ("arrow", "arrow"), ("jsonl", "json"), ("json", "json"))


# ---------------------------------------------------------------- reading rows


def hub_candidates(hub_id: str) -> list[str]:
    """``"lmms-lab/MME"`` -> the same name under every accepted owner, given id first."""
    for prefix in HUB_PREFIXES:
        if hub_id.startswith(prefix):
            name = hub_id[len(prefix):]
            return [hub_id] + [p + name for p in HUB_PREFIXES if p != prefix]
    return [hub_id]


def _hub_defaults(data: str, hub: Sequence[tuple]) -> tuple[Optional[str], Optional[str]]:
    """(config, split) of the ``hub`` entry naming the same dataset as ``data``
    (owner prefixes ignored), else of the first entry."""
    names = set(hub_candidates(data))
    for hub_id, config, split in hub:
        if hub_id in names:
            return config, split
    return (hub[0][1], hub[0][2]) if hub else (None, None)


def _local_files(root: Path, config: Optional[str], split: Optional[str]) -> tuple[str, list[str]]:
    """(datasets builder, files) for a local file or folder.

    A folder may mirror the hub repository (``<config>/<split>-00000-of-00001.parquet``):
    the ``config`` subfolder is used when it exists, and files named ``<split>-..``/``<split>.<ext>``
    (or in a folder named ``split``) when any are.
    """
    if root.is_file():
        suffix = root.name.rsplit(".", 1)[-1]
        builder = dict(_LOCAL_FORMATS).get(suffix)
        if builder is None:
            raise ValueError(f"{root}: expected a .parquet, .arrow, .jsonl or .json file")
        return builder, [str(root)]
    if config and (root / config).is_dir():
        root = root / config
    for suffix, builder in _LOCAL_FORMATS:
        files = sorted(p for p in root.rglob(f"*.{suffix}") if p.name not in ("dataset_info.json", "state.json"))
        if not files:
            continue
        if split:
            named = re.compile(rf"{re.escape(split)}(?:[-_.]|$)")  # "test-0000.parquet", not "testdev-.."
            in_split = [p for p in files if named.match(p.name) or p.parent.name == split]
            files = in_split or files
        return builder, [str(p) for p in files]
    raise FileNotFoundError(f"{root}: no .parquet, .arrow, .jsonl or .json files")


def load_dataset_split(data: Optional[str], hub: Sequence[tuple] = (), *, split: Optional[str] = None,
                       config: Optional[str] = None):
    """The ``datasets.Dataset`` behind :func:`load_rows` (for joins that need random access).

    Loaded once per process for the same arguments (a local folder's modification time
    included): the read stage asks for a few rows at a time, many times per worker."""
    hub = tuple(tuple(entry) for entry in hub)
    stamp = Path(data).stat().st_mtime_ns if data and Path(data).exists() else None
    return _load_dataset_split(data, hub, split, config, stamp)


@functools.lru_cache(maxsize=16)
def _load_dataset_split(data, hub, split, config, _stamp):
    import datasets

    if data and Path(data).exists():
        default_config, default_split = (hub[0][1], hub[0][2]) if hub else (None, None)
        builder, files = _local_files(Path(data), config or default_config, split or default_split)
        return datasets.load_dataset(builder, data_files=files, split="train")
    attempts = [(data, *_hub_defaults(data, hub))] if data else [tuple(entry) for entry in hub]
    if not attempts:
        raise ValueError("no data path or hub id given, and the task names no hub dataset")
    errors = []
    for hub_id, default_config, default_split in attempts:
        for candidate in hub_candidates(hub_id):
            try:
                return datasets.load_dataset(candidate, config or default_config, split=split or default_split)
            except Exception as err:  # noqa: BLE001 - try the next owner, report all at the end
                errors.append(f"{candidate}: {type(err).__name__}: {err}")
    raise FileNotFoundError(f"{data!r} is no local path and no loadable hub dataset:\n  " + "\n  ".join(errors))


def load_rows(data: Optional[str], hub: Sequence[tuple] = (), *, limit: Optional[int] = None,
              split: Optional[str] = None, config: Optional[str] = None, start: int = 0,
              stop: Optional[int] = None) -> Iterator[dict]:
    """Rows as plain dicts, in file order, from a local file/folder or a hub id.

    data:   a local ``.parquet``/``.arrow``/``.jsonl``/``.json`` file or folder of them
            (read sorted by name), or a hub id; None -> the ``hub`` entries in order.
    hub:    the task's ``((id, config, split), ...)``: config/split defaults.
    limit:  the first N rows only.
    start, stop: only rows ``start <= index < stop`` of those (the read stage's ranges).

    Each row also carries ``"_index"``, its position in the split: the stable id of
    benchmarks whose rows have no id column of their own.
    """
    ds = load_dataset_split(data, hub, split=split, config=config)
    end = count_rows(data, hub, limit=limit, split=split, config=config)
    end = end if stop is None else min(stop, end)
    if start or end < len(ds):
        ds = ds.select(range(start, max(start, end)))
    ds = undecoded_images(ds)
    for offset, row in enumerate(ds):
        yield {**row, "_index": start + offset}


def count_rows(data: Optional[str], hub: Sequence[tuple] = (), *, limit: Optional[int] = None,
               split: Optional[str] = None, config: Optional[str] = None) -> int:
    """How many rows :func:`load_rows` gives with these arguments (no row is read)."""
    total = len(load_dataset_split(data, hub, split=split, config=config))
    return total if limit is None else min(limit, total)


def undecoded_images(ds):
    """``ds`` with its image columns left as ``{"bytes", "path"}``: one corrupt image must
    become that sample's error (in the task's ``sample``), not stop the whole read."""
    import datasets

    def plain(feature):
        if isinstance(feature, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(feature, (datasets.List, datasets.Sequence)) and hasattr(feature, "feature"):
            inner = plain(feature.feature)
            return type(feature)(inner) if inner is not feature.feature else feature
        return feature

    changed = {name: plain(f) for name, f in ds.features.items() if plain(f) is not f}
    for name, feature in changed.items():
        ds = ds.cast_column(name, feature)
    return ds


class DatasetTask(Task):
    """A task whose rows come straight from :func:`load_rows` with the task's ``hub``."""

    def rows(self, data: Optional[str] = None, *, limit: Optional[int] = None, split: Optional[str] = None,
             config: Optional[str] = None, start: int = 0, stop: Optional[int] = None) -> Iterator[dict]:
        return load_rows(data, self.hub, limit=limit, split=split, config=config, start=start, stop=stop)

    def count(self, data: Optional[str] = None, *, limit: Optional[int] = None, split: Optional[str] = None,
              config: Optional[str] = None) -> int:
        return count_rows(data, self.hub, limit=limit, split=split, config=config)


class ShortAnswerTask(DatasetTask):
    """Free-form short answers: the stripped output (lmms-eval strips every output
    before scoring it), scored per sample, mean in percent."""

    def parse(self, output, sample):
        return (output or "").strip()

    def aggregate(self, results):
        return {"score": percent([result_score(r) for r in results])}


class VQATask(ShortAnswerTask):
    """Short answers scored with VQA accuracy against the human answers."""

    def score(self, parsed, sample):
        return vqa_accuracy(parsed or "", sample.answer)


# ---------------------------------------------------------------- images


def encode_image(value: Any, root: Optional[str] = None) -> bytes:
    """A PIL image, an HF ``{"bytes", "path"}`` dict, raw bytes or a file path -> PNG/JPEG bytes.

    Encoded PNG/JPEG input is passed through unchanged; other formats and decoded PIL
    images are written as PNG. A relative path is resolved against ``root``.
    Raises ValueError when there is no readable image.
    """
    from PIL import Image

    if value is None:
        raise ValueError("no image")
    if isinstance(value, Image.Image):
        return _png(value)
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return _checked(bytes(value["bytes"]), "image bytes")
        if value.get("path"):
            return encode_image(value["path"], root)
        raise ValueError("image dict has neither bytes nor path")
    if isinstance(value, (bytes, bytearray)):
        return _checked(bytes(value), "image bytes")
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        return _checked(path.read_bytes(), str(path))
    raise ValueError(f"cannot read an image from {type(value).__name__}")


def _checked(data: bytes, where: str) -> bytes:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            if fmt in ("PNG", "JPEG"):
                img.verify()
                return data
            img.load()
            return _png(img)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise ValueError(f"unreadable image ({where}): {type(err).__name__}: {err}") from err


def _png(img) -> bytes:
    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # lossless; speed over size
    return buf.getvalue()


def encode_images(values: Sequence[Any], root: Optional[str] = None) -> tuple[list[bytes], Optional[str]]:
    """Encode every image; ``(images, None)`` or ``([], reason)`` for a Sample's ``error``."""
    if not values:
        return [], "no image"
    try:
        return [encode_image(v, root) for v in values], None
    except ValueError as err:
        return [], str(err)


def image_sample(task: Task, id: str, prompt: str, values: Sequence[Any], *, answer: Any, meta: dict,
                 root: Optional[str] = None) -> Sample:
    """A Sample with the encoded images, or with ``error`` set when one cannot be read;
    the task's generation settings."""
    images, error = encode_images(values, root)
    return Sample(id=id, prompt=prompt, images=images, answer=answer, meta=meta, error=error,
                  max_new_tokens=task.max_new_tokens, until=tuple(task.until))


def is_na(value: Any) -> bool:
    """None or NaN: a missing cell, as ``pandas.isna`` sees one (the string "nan" is not)."""
    return value is None or (isinstance(value, float) and value != value)


# ---------------------------------------------------------------- prompts


def option_lines(options: Sequence[str], letters: str = LETTERS) -> list[str]:
    """["cat", "dog"] -> ["A. cat", "B. dog"]."""
    return [f"{letter}. {text}" for letter, text in zip(letters, options)]


def mc_prompt(question: str, options: Sequence[str], *, context: str = "",
              instruction: str = MC_INSTRUCTION) -> str:
    """context (if any), question, "A. .." lines, instruction; one per line."""
    parts = ([context] if context else []) + [question] + option_lines(options)
    return "\n".join(parts + ([instruction] if instruction else []))


# ---------------------------------------------------------------- lenient parsing


# "B", "(B)", "[B]", "B.", "B:", "B," or "B" alone on the first line; not "A dog".
_LEADING_LETTER = re.compile(r"^\s*[\(\[]?([A-Z])(?:[\)\]]|(?=[ \t]*(?:[.:,]|\n|$)))")
# "The answer is B", "Answer: (C)", "option D"; the letter must be upper case.
_STATED_LETTER = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[:\s]*[\(\[]?([A-Za-z])\b(?!')", re.I)


def parse_letter(output: str, options: Sequence[str]) -> Optional[str]:
    """The chosen option letter, or None; deterministic (never a guess). The reading of
    the ``lenient`` scoring (lmms-eval's own extractors are in ``pipeline.tasks.extract``).

    Accepts "B", "(B)", "B.", "B) text", "B: text", "The answer is B" / "Answer: (B)";
    otherwise the option whose text the output equals, or the only option whose text it
    contains. ``options`` are the option texts in letter order (A first).
    """
    valid = LETTERS[: len(options)]
    text = (output or "").strip()
    match = _LEADING_LETTER.match(text)
    if match and match.group(1) in valid:
        return match.group(1)
    for match in _STATED_LETTER.finditer(text):
        if match.group(1).upper() in valid and match.group(1).isupper():
            return match.group(1)
    norm = _squash(text)
    if not norm:
        return None
    texts = [_squash(str(o)) for o in options]
    exact = [i for i, t in enumerate(texts) if t and t == norm]
    if len(exact) == 1:
        return valid[exact[0]]
    contained = [i for i, t in enumerate(texts) if t and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", norm)]
    return valid[contained[0]] if len(contained) == 1 else None


def _squash(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def parse_yes_no(output: str) -> Optional[str]:
    """"yes"/"no" as lmms-eval's MME parser reads it (exact word, "y"/"n", or "yes"/"no"
    in the first 4 characters, ``extract.yes_no``); None otherwise. The lenient reading
    of POPE, whose lmms-eval scoring takes only the exact word."""
    from pipeline.tasks.extract import yes_no

    answer = yes_no(output or "")
    return None if answer == "other" else answer


# ---------------------------------------------------------------- metrics


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match(prediction: str, gold: str) -> float:
    """lmms-eval's ``exact_match`` metric with ignore_case and ignore_punctuation
    (lmms_eval/api/metrics.py ``exact_match_hf_evaluate``, GQA): both lower-cased, ASCII
    punctuation removed, then compared as they are, so "yes ." is not "yes". It compares
    numpy fixed-width strings, and so do we: trailing NULs dropped, and the lower-cased
    text cut to the original's length ("İ" lower-cases to two characters).

    >>> exact_match("İ", "i"), exact_match("İ", "i\u0307")
    (1.0, 0.0)
    """
    def form(text: str) -> str:
        text = str(text)
        return text.rstrip("\x00").lower()[:len(text)].translate(_NO_PUNCTUATION).rstrip("\x00")

    return float(form(prediction) == form(gold))


def normalize_exact(text: str) -> str:
    """The lenient exact-match form: lowercase, ASCII punctuation removed, whitespace trimmed."""
    return (text or "").lower().translate(_NO_PUNCTUATION).strip()


def exact_match_lenient(prediction: str, gold: str) -> float:
    return float(normalize_exact(prediction) == normalize_exact(gold))


# The official VQA evaluation normaliser (vqaEval.py), as lmms-eval's
# EvalAIAnswerProcessor (lmms_eval/tasks/_task_utils/vqa_eval_metric.py) applies it.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
                "`", ",", "?", "!")


def _vqa_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # lmms-eval passes re.UNICODE (32) where re.sub takes its count: at most 32 periods go.
    return _PERIOD_STRIP.sub("", out, count=32)


def _vqa_digits_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def vqa_normalize(text: str) -> str:
    """lmms-eval's EvalAIAnswerProcessor: "Two dogs." -> "2 dogs", "a dog" -> "dog",
    "dont" -> "don't"."""
    text = (text or "").lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digits_articles(_vqa_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[Any]) -> float:
    """Mean over the leave-one-out subsets of the human answers of min(1, matches / 3),
    prediction and answers normalised by :func:`vqa_normalize` (lmms-eval textvqa/ok_vqa
    ``process_results``, with its exact ``statistics.mean``). ``answers`` are strings or
    VQA-style ``{"answer": str}`` dicts; none scores 0."""
    if not answers:
        return 0.0
    pred = vqa_normalize(prediction)
    gold = [vqa_normalize(a["answer"] if isinstance(a, Mapping) else str(a)) for a in answers]
    accs = [min(1, float(sum(g == pred for j, g in enumerate(gold) if j != i)) / 3) for i in range(len(gold))]
    return float(statistics.mean(accs))


def result_score(result: Mapping) -> float:
    """A result row's per-sample score; a sample that could not run (``error``) scores 0."""
    return 0.0 if result.get("error") else float(result.get("score") or 0.0)


def percent(scores: Sequence[float]) -> float:
    """Mean x 100 (0 for no scores): the scale of every accuracy-like metric here; the
    mean first, as lmms-eval's ``mean`` aggregation, so the result is 100 x its value."""
    return 100.0 * (sum(scores) / len(scores)) if scores else 0.0


def accuracy(results: list[dict], group_key: Optional[str] = None) -> dict[str, float]:
    """``score`` = accuracy x 100 over all rows (an error row counts as wrong, so the
    denominator is the benchmark's size), plus one accuracy per ``meta[group_key]``."""
    out = {"score": percent([result_score(r) for r in results]),
           "n": float(len(results)), "errors": float(sum(bool(r.get("error")) for r in results))}
    if group_key:
        groups: dict[str, list[float]] = {}
        for r in results:
            value = (r.get("meta") or {}).get(group_key)
            if value not in (None, ""):
                groups.setdefault(str(value), []).append(result_score(r))
        out.update({name: percent(scores) for name, scores in sorted(groups.items())})
    return out
