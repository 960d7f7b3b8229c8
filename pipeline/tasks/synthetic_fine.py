"""synthetic_fine: generated images and clips whose answers hang on small details
(pipeline/synthetic.py), the benchmark the trained ``tiny:qwen2_vl_synth`` is scored on.

Layout (written by ``python -m pipeline.samples --tasks synthetic_fine``)::

    <data>/test.parquet          id, split, kind, question, options, answer, image, video
    <data>/videos/<id>.mp4       the clips of the "moved" rows (``video`` is this relative path)

``image`` is an HF Image column (null for clips); ``options`` is empty for short
answers. Other splits sit beside it as ``train.parquet`` / ``validation.parquet``
(``rows(data, split=...)``; default "test").

Prompt: the question, then "A. red" option lines and the multiple-choice line, or the
short-answer line (``synthetic.prompt_text``). Multiple choice is parsed like the MC
benchmarks (``parse_letter``), short answers as the first number in the output
(digits or a number word) for counts and digits, and as the one colour name the output
contains for colours. Metric: accuracy x 100 (``score``), and per kind.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Optional

from pipeline import synthetic
from pipeline.tasks import register_task
from pipeline.tasks._media import find_media
from pipeline.tasks._video import MEDIA_ROOT, media_root_of
from pipeline.tasks.base import Sample, Task
from pipeline.tasks.common import accuracy, count_rows, image_sample, load_rows, parse_letter
from pipeline.video import media_root_for

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}
_NUMBER = re.compile(r"\d+|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.I)


def parse_colour(output: str) -> Optional[str]:
    """The colour named in ``output`` ("Red.", "it is red" -> "red"); None when it names
    none or several."""
    words = set(re.findall(r"[a-z]+", (output or "").lower()))
    named = [c for c in synthetic.COLOURS if c in words]
    return named[0] if len(named) == 1 else None


def parse_number(output: str) -> Optional[str]:
    """The first number in ``output`` as digits ("3", "There are three." -> "3"), or None."""
    match = _NUMBER.search(output or "")
    if not match:
        return None
    text = match.group(0).lower()
    return _NUMBER_WORDS.get(text, str(int(text)) if text.isdigit() else None)


class SyntheticFine(Task):
    name = "synthetic_fine"
    required_text = ("question",)
    modality = "image"  # mostly images; the "moved" rows carry a video, which the decode stage reads
    max_new_tokens = 8  # ours, not an lmms-eval task: a short answer, no stop strings

    def rows(self, data: Optional[str] = None, *, limit: Optional[int] = None, split: Optional[str] = None,
             config: Optional[str] = None, start: int = 0, stop: Optional[int] = None) -> Iterator[dict]:
        root = media_root_for(_local(data))
        for row in load_rows(data, (), limit=limit, split=split or "test", start=start, stop=stop):
            yield {**row, MEDIA_ROOT: root}

    def count(self, data: Optional[str] = None, *, limit: Optional[int] = None, split: Optional[str] = None,
              config: Optional[str] = None) -> int:
        return count_rows(_local(data), (), limit=limit, split=split or "test")

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        options = list(row.get("options") or [])
        prompt = synthetic.prompt_text(str(row["question"]), options)
        meta = {"kind": row["kind"], "options": options}
        if row.get("video"):
            stem, ext = os.path.splitext(row["video"])  # relative to the data folder: no other layout
            path, error = find_media([media_root_of(row, media_root)], stem, (ext,))
            return Sample(id=str(row["id"]), prompt=prompt, video=path, answer=row["answer"], meta=meta,
                          error=error, max_new_tokens=self.max_new_tokens, until=self.until)
        return image_sample(self, str(row["id"]), prompt, [row.get("image")], answer=row["answer"], meta=meta,
                            root=media_root_of(row, media_root))

    def parse(self, output: str, sample: Sample) -> Optional[str]:
        if sample.meta["options"]:
            return parse_letter(output, sample.meta["options"])
        if sample.meta["kind"] in ("count", "digit"):
            return parse_number(output)
        return parse_colour(output)

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        return accuracy(results, "kind")


def _local(data: Optional[str]) -> str:
    if not data:
        raise ValueError("synthetic_fine needs a local folder; write one with "
                         "`python -m pipeline.samples --out DIR --tasks synthetic_fine`")
    return data


register_task(SyntheticFine())
