"""How outputs become scores: lmms-eval's rules at a named release, and an optional
lenient reading for chatty models.

``lmms_eval`` (the default): every benchmark follows lmms-eval :data:`LMMS_EVAL_VERSION`
task by task (its ``lmms_eval/tasks/<name>/`` yaml and utils): prompt text with the
default kwargs, generation kwargs (max new tokens, ``until`` stop strings), answer
extraction, per-sample score, aggregation and sub-metrics. One deliberate difference:
where lmms-eval draws a random letter (EgoSchema, NExTQA: no option found) or asks a
GPT judge (MMBench: no option found), the sample scores 0 and is counted in the
``unparsed`` metric, so a run is deterministic. ``tests/conformance`` checks all of it
against the lmms-eval package itself.

``lenient``: the same outputs are also read by our tolerant parsers ("B", "(B)",
"B) ..", "The answer is B", the option's text, "Yes, there is ..."), and those metrics
are reported beside lmms-eval's under ``lenient/<name>`` (``lenient/score``, ...), so a
table never mixes the two. Prompts and generation are lmms-eval's in both.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

LMMS_EVAL_VERSION = "0.7.3"
LMMS_EVAL = "lmms_eval"
LENIENT = "lenient"
SCORINGS = (LMMS_EVAL, LENIENT)
LENIENT_PREFIX = "lenient/"


def check_scoring(name: Any) -> str:
    """``name`` when it is a known scoring, else ValueError naming the allowed ones."""
    if name not in SCORINGS:
        raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {name!r}")
    return name


def scoring_label(name: str) -> str:
    """What a run records as its ``scoring`` param: ``"lmms_eval 0.7.3"``, or
    ``"lmms_eval 0.7.3 + lenient"`` when the lenient metrics are reported too."""
    base = f"{LMMS_EVAL} {LMMS_EVAL_VERSION}"
    return base if check_scoring(name) == LMMS_EVAL else f"{base} + {LENIENT}"


def read(task, output: str, sample, *, lenient: bool = False) -> tuple[Any, float]:
    """``(parsed, score)`` of one output under lmms-eval's reading, or the lenient one."""
    if lenient:
        parsed = task.parse_lenient(output, sample)
        return parsed, float(task.score_lenient(parsed, sample))
    parsed = task.parse(output, sample)
    return parsed, float(task.score(parsed, sample))


def unparsed(results: Sequence[Mapping]) -> int:
    """Rows that ran but whose answer lmms-eval would have guessed (``parsed`` None)."""
    return sum(1 for r in results if not r.get("error") and r.get("parsed") is None)


def task_metrics(task, results: Sequence[Mapping], scoring: str = LMMS_EVAL) -> dict[str, float]:
    """The task's metrics over result rows (``parsed``, ``score``, ``answer``, ``meta``,
    ``error``; with the lenient scoring also ``lenient_parsed``, ``lenient_score``):
    lmms-eval's, with ``unparsed``, then the lenient ones under ``lenient/``."""
    out = _with_unparsed(task, list(results))
    if check_scoring(scoring) == LENIENT:
        lenient = [{**r, "parsed": r.get("lenient_parsed"), "score": r.get("lenient_score")} for r in results]
        out.update({LENIENT_PREFIX + k: v for k, v in _with_unparsed(task, lenient).items()})
    return out


def _with_unparsed(task, results: list) -> dict[str, float]:
    metrics = {k: float(v) for k, v in task.aggregate(results).items()}
    metrics.setdefault("unparsed", float(unparsed(results)))  # MMBench counts questions itself
    return metrics
