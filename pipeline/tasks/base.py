"""The benchmark interface: read a benchmark's real layout, build prompts, parse, score.

A task turns the benchmark's rows (from a hub id through ``datasets``, or a local
directory with the same columns as parquet/jsonl plus its media) into plain
:class:`Sample` records the pipeline can ship between Ray workers, and scores the
model's outputs the way lmms-eval does (../shared/spec/benchmarks.md).

Everything here is pure Python on small values: no model, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional


@dataclass
class Sample:
    """One question, ready for a model.

    id:        unique within the task (the benchmark's own id where it has one).
    prompt:    the user text exactly as the spec builds it (question, options, instruction).
    images:    encoded image files (PNG/JPEG bytes), in prompt order.
    video:     path of the video file, or None.
    answer:    the gold answer in the benchmark's own form (letter, list of 10 answers, ...).
    meta:      the extra columns scoring needs (category, question_id, ...), JSON-serialisable.
    error:     why the sample cannot be run (missing image, unreadable row), or None.
    max_new_tokens: generation budget for this sample.
    """

    id: str
    prompt: str
    images: list[bytes] = field(default_factory=list)
    video: Optional[str] = None
    answer: Any = None
    meta: dict = field(default_factory=dict)
    error: Optional[str] = None
    max_new_tokens: int = 16


class Task:
    """Base class of a benchmark. Subclasses set the class attributes and implement
    ``rows``, ``sample``, ``parse`` and ``aggregate`` (``score`` when per-sample scores
    are not simply parse == answer)."""

    name: str = ""
    modality: str = "image"  # "image" or "video"
    # (dataset id, config or None, split) in order of preference; ids under lmms-lab/,
    # lmms-eval/ and lmms-lab-encoder/ are all accepted (see the spec).
    hub: tuple[tuple[str, Optional[str], str], ...] = ()
    max_new_tokens: int = 16

    def rows(self, data: str, *, limit: Optional[int] = None, start: int = 0, stop: Optional[int] = None,
             **options) -> Iterator[dict]:
        """The benchmark's rows from a hub id or a local directory, in a fixed order: the
        first ``limit``, and of those the ones at positions ``start <= i < stop`` (the
        pipeline's read stage takes a range at a time, on a worker)."""
        raise NotImplementedError

    def count(self, data: str, *, limit: Optional[int] = None, **options) -> int:
        """How many rows :meth:`rows` gives (without reading them)."""
        raise NotImplementedError

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        """One row -> a Sample (never raises for bad media: sets ``error`` instead)."""
        raise NotImplementedError

    def parse(self, output: str, sample: Sample) -> Any:
        """The model's text -> the answer in the benchmark's form (None if unparseable)."""
        raise NotImplementedError

    def score(self, parsed: Any, sample: Sample) -> float:
        """Per-sample score in [0, 1] (benchmarks with set-level metrics still give one)."""
        return float(parsed is not None and parsed == sample.answer)

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        """The benchmark's metrics over rows with ``parsed``, ``score``, ``answer``, ``meta``,
        ``error``; the main metric under the key ``"score"``."""
        raise NotImplementedError
