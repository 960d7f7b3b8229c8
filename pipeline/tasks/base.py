"""The benchmark interface: read a benchmark's real layout, build prompts, parse, score.

A task turns the benchmark's rows (from a hub id through ``datasets``, or a local
directory with the same columns as parquet/jsonl plus its media) into plain
:class:`Sample` records the pipeline can ship between Ray workers, and scores the
model's outputs the way lmms-eval scores them (``pipeline.tasks.scoring``: the release,
and the one deliberate difference).

Everything here is pure Python on small values: no model, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional


@dataclass
class Sample:
    """One question, ready for a model.

    id:        unique within the task (the benchmark's own id where it has one).
    prompt:    the user text exactly as lmms-eval builds it (question, options, instruction).
    images:    encoded image files (PNG/JPEG bytes), in prompt order.
    video:     path of the video file, or None.
    answer:    the gold answer in the benchmark's own form (letter, list of 10 answers, ...).
    meta:      the extra columns scoring needs (category, question_id, ...), JSON-serialisable.
    error:     why the sample cannot be run (missing image, unreadable row), or None.
    max_new_tokens: generation budget for this sample; None: the model's default
               (lmms-eval's model wrappers' own, ``pipeline.infer.WRAPPER_MAX_NEW_TOKENS``).
    until:     stop strings (lmms-eval's ``until``): the answer is the generated text up to
               the first of them, and generation stops there.
    """

    id: str
    prompt: str
    images: list[bytes] = field(default_factory=list)
    video: Optional[str] = None
    answer: Any = None
    meta: dict = field(default_factory=dict)
    error: Optional[str] = None
    max_new_tokens: Optional[int] = 16
    until: tuple[str, ...] = ()


class Task:
    """Base class of a benchmark. Subclasses set the class attributes and implement
    ``rows``, ``sample``, ``parse`` and ``aggregate`` (``score`` when per-sample scores
    are not simply parse == answer).

    Two readings of an output (``pipeline.tasks.scoring``): ``parse``/``score`` are
    lmms-eval's, the default; ``parse_lenient``/``score_lenient`` are the tolerant
    readings of the optional ``lenient`` scoring (by default the same as lmms-eval's).
    In both, ``parse`` returns None exactly where lmms-eval would draw a random letter
    or ask a GPT judge: such a sample scores 0 and counts as ``unparsed``.
    """

    name: str = ""
    modality: str = "image"  # "image" or "video"
    # (dataset id, config or None, split) in order of preference; ids under lmms-lab/,
    # lmms-eval/ and lmms-lab-encoder/ are all accepted (see the spec).
    hub: tuple[tuple[str, Optional[str], str], ...] = ()
    # Generation: lmms-eval's generation_kwargs of the task (max_new_tokens; None: the
    # model wrapper's default) and its `until` stop strings.
    max_new_tokens: Optional[int] = 16
    until: tuple[str, ...] = ()

    def rows(self, data: str, *, limit: Optional[int] = None, start: int = 0, stop: Optional[int] = None,
             **options) -> Iterator[dict]:
        """The benchmark's rows from a hub id or a local directory, in a fixed order: the
        first ``limit``, and of those the ones at positions ``start <= i < stop`` (the
        pipeline's read stage takes a range at a time, on a worker)."""
        raise NotImplementedError

    def count(self, data: str, *, limit: Optional[int] = None, **options) -> int:
        """How many rows :meth:`rows` gives (without reading them)."""
        raise NotImplementedError

    # Columns every row must hold as non-empty text, and the gold answer's form: checked
    # by :meth:`check_row` before :meth:`sample`, so that a null, a number, undecodable
    # bytes or an answer out of range becomes that row's error, never a silent "None"
    # prompt or a failed run. ``answer_choices``: the allowed values of ``answer_column``
    # (an index range or letters); None: any text.
    required_text: tuple[str, ...] = ()
    answer_column: Optional[str] = None
    answer_choices: Optional[tuple] = None

    def check_row(self, row: dict) -> Optional[str]:
        """Why ``row`` cannot become a sample (a deterministic message), or None. Text
        fields given as UTF-8 bytes are decoded in place."""
        for name in self.required_text + ((self.answer_column,) if self.answer_column else ()):
            value = row.get(name)
            if isinstance(value, (bytes, bytearray)):
                try:
                    row[name] = value = bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    return f"row: {name} is not UTF-8 text"
            if value is None or (isinstance(value, float) and value != value):
                return f"row: {name} is missing"
            if name in self.required_text and (not isinstance(value, str) or not value.strip()):
                return f"row: {name} must be non-empty text, got {type(value).__name__} {str(value)[:40]!r}"
        if self.answer_column and self.answer_choices is not None:
            answer = row[self.answer_column]
            allowed = {str(c) for c in self.answer_choices}
            if str(answer).strip() not in allowed or isinstance(answer, bool):
                return (f"row: {self.answer_column} must be one of {', '.join(sorted(allowed))}, "
                        f"got {str(answer)[:40]!r}")
        return None

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        """One row -> a Sample (never raises for bad media: sets ``error`` instead)."""
        raise NotImplementedError

    def parse(self, output: str, sample: Sample) -> Any:
        """The model's text -> the answer in the benchmark's form, as lmms-eval reads it
        (None where lmms-eval would guess)."""
        raise NotImplementedError

    def score(self, parsed: Any, sample: Sample) -> float:
        """Per-sample score in [0, 1] (benchmarks with set-level metrics still give one)."""
        return float(parsed is not None and parsed == sample.answer)

    def parse_lenient(self, output: str, sample: Sample) -> Any:
        """The tolerant reading of the ``lenient`` scoring (None: no answer found)."""
        return self.parse(output, sample)

    def score_lenient(self, parsed: Any, sample: Sample) -> float:
        return self.score(parsed, sample)

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        """The benchmark's metrics over rows with ``parsed``, ``score``, ``answer``, ``meta``,
        ``error``; the main metric under the key ``"score"``."""
        raise NotImplementedError
