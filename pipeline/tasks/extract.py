"""lmms-eval's answer extractors, one per family of tasks, re-implemented rule for rule.

Each function says which lmms-eval 0.7.3 function it follows; ``tests/conformance``
runs it against that function on many output formats. Where lmms-eval would draw a
random letter (or ask a GPT judge), these return None: the caller scores 0 and counts
the sample as ``unparsed`` (``pipeline.tasks.scoring``). Pure functions on strings.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

_EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'")


def yes_no(output: str) -> str:
    """"yes", "no" or "other" (lmms_eval/tasks/mme/utils.py ``parse_pred_ans``):
    the exact word, "y"/"n", else "yes"/"no" within the first four characters,
    after lower-casing and removing periods.

    >>> [yes_no(x) for x in ("Yes.", "n", "No, there is not.", "There is", "yesterday")]
    ['yes', 'no', 'no', 'other', 'yes']
    """
    text = output.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def _padded(response: str, extra: tuple[str, ...] = ()) -> str:
    """The response with edge punctuation stripped, one character class after the other,
    and a space either side (the MMMU extractors' preparation)."""
    for char in _EDGE_PUNCTUATION + extra:
        response = response.strip(char)
    return f" {response} "


def mmmu_choice(response: str, options: Mapping[str, str]) -> Optional[str]:
    """The letter EgoSchema's lmms-eval reads (egoschema/utils.py
    ``parse_multi_choice_response``, after MMMU); None where it picks at random.

    ``options``: letter -> the option as the dataset has it, stripped ("A. C cuts ...").
    Candidates are every "(X)", "X " and "X." in the padded response; with none and more
    than five words, every option whose text it contains. Of several, the one whose last
    occurrence starts first wins.

    >>> mmmu_choice("C is cleaning the dishes", {"A": "A. x", "B": "B. y", "C": "C. z"})
    'C'
    """
    text = _padded(response)
    letters = list(options)
    found = [f"({c})" for c in letters if f"({c})" in text]
    found += [f"{c} " for c in letters if f"{c} " in text]
    found += [f"{c}." for c in letters if f"{c}." in text]
    by_content = not found
    if by_content:
        found = _by_option_text(text, options)
    if not found:
        return None
    if len(found) > 1:
        if by_content:
            starts = [text.lower().rfind(options[c].lower()) for c in found]
        else:
            starts = [text.rfind(c) for c in found]
        found = [found[starts.index(min(starts))]]
    return found[0].replace("(", "").replace(")", "").replace(".", "").strip()


def _by_option_text(text: str, options: Mapping[str, str]) -> list[str]:
    """The letters whose option text is in ``text``, when it has more than five words
    (the last resort of EgoSchema's and NExTQA's extractors)."""
    if len(text.split()) <= 5:
        return []
    return [c for c in options if options[c].lower() in text.lower()]


def nextqa_choice(response: str, options: Mapping[str, str]) -> Optional[str]:
    """The letter NExTQA's lmms-eval reads (nextqa/utils.py ``parse_multi_choice_response``);
    None where it picks at random.

    Unlike EgoSchema's: "(X)" first; only when there is none, "X "; only then "X."; then
    the options' texts (more than five words). Of several, the last one wins (by
    "(X)", else by " X ", else by the option text).

    >>> nextqa_choice("(B) or (C)", {"A": "a", "B": "b", "C": "c"})
    'C'
    """
    text = _padded(response)
    letters = list(options)
    found = [c for c in letters if f"({c})" in text]
    bracketed = bool(found)
    if not found:
        found = [c for c in letters if f"{c} " in text]
    if not found:
        found = [c for c in letters if f"{c}." in text]
    by_content = not found
    if by_content:
        found = _by_option_text(text, options)
    if not found:
        return None
    if len(found) > 1:
        if by_content:
            ends = [text.lower().rfind(options[c].lower()) for c in found]
        elif bracketed:
            ends = [text.rfind(f"({c})") for c in found]
        else:
            ends = [text.rfind(f" {c} ") for c in found]
        return found[ends.index(max(ends))]
    return found[0]


# lmms_eval/tasks/_task_utils/mcq_extract.py: phrases, and how much each format counts.
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
_MARKED = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))  # format, priority
_PHRASE, _START, _END = 7, 10, 9


def mcq_letter(response: str, choices: Sequence[str] = tuple("ABCDEFGH")) -> str:
    """The letter lmms-eval's shared extractor reads (_task_utils/mcq_extract.py
    ``extract_mcq_answer``, used by Video-MME), or "" (it never guesses).

    Every occurrence of a letter in a known format is a candidate with a priority:
    standalone at the start 10, at the end 9, after an answer phrase 7, "(X)" 6, "X." 5,
    "X:" 4, "X)" 3, "X " 2, any occurrence 0 (only when nothing else matched). The
    highest priority wins, then the later position, then the earlier candidate.

    >>> mcq_letter("I think (B), but the answer is C")
    'C'
    """
    if not response or not response.strip():
        return ""
    text = response.strip()
    for char in _EDGE_PUNCTUATION + ('"',):
        text = text.strip(char)
    text = f" {text} "
    found = []  # (letter, position, priority) in lmms-eval's order
    for pattern, priority in _MARKED:
        found += [(c, text.rfind(pattern.format(c)), priority) for c in choices if pattern.format(c) in text]
    lowered = text.lower()
    for phrase in _ANSWER_PHRASES:
        at = lowered.find(phrase)
        if at != -1:
            after = at + len(phrase)
            found += [(c, text.find(c, after), _PHRASE) for c in choices if text.find(c, after) != -1]
    bare = text.strip()
    found += [(c, 0, _START) for c in choices if bare.startswith(c) and (len(bare) == 1 or not bare[1].isalpha())]
    found += [(c, len(text) - 1, _END) for c in choices
              if bare.endswith(c) and (len(bare) == 1 or not bare[-2].isalpha())]
    if not found:
        found = [(c, text.rfind(c), 0) for c in choices if c in text]
    if not found:
        return ""
    return max(found, key=lambda f: (f[2], f[1]))[0]  # max: the first of equals, as a stable sort


_EGOPLAN_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                     "The best option isThe correct option is", "Best answer:Best option:")


def egoplan_letter(response: str) -> str:
    """The letter EgoPlan's lmms-eval reads (egoplan/utils.py ``extract_characters_regex``):
    the first A-D anywhere after removing "The answer is"-like prefixes, "" when there is
    none (or more than ten words and no A-D). Capitals inside words count ("And" -> "A").

    >>> egoplan_letter("The answer is (C) put down the knife")
    'C'
    """
    text = response.strip()
    for prefix in _EGOPLAN_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search("[ABCD]", text)
    return match[0] if match else ""


def mmbench_option(answer: str, choices: Mapping[str, str]) -> Optional[str]:
    """The letter MMBench's lmms-eval infers without GPT (mmbench/mmbench_evals.py
    ``MMBench_Evaluator.can_infer``), or None where it would ask GPT (then guess).

    First a letter A-E as a whitespace-separated word: bare when exactly one letter is
    (unless "A" is one of more than three words: an article), else "X.", "X,", "X:",
    "X)", "X).", "(X)", "(X).", ":X", ":X,", ":X.", ":X)", ":X)." in that order, the
    first format exactly one letter appears in. Then the option texts (``choices``:
    A-D -> text): the one option whose lower-cased text is in the lower-cased answer.

    >>> mmbench_option("B. a dog", {"A": "cat", "B": "dog"}), mmbench_option("A dog it is", {"A": "cat", "B": "dog"})
    ('B', 'B')
    """
    letter = _mmbench_letter(answer)
    if letter:
        return letter
    lowered = answer.lower()
    matches = [k for k, text in choices.items() if str(text).lower() in lowered]
    return matches[0] if len(matches) == 1 else None


_MMBENCH_AFFIXES = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""),
                    (":", ","), (":", "."), (":", ")"), (":", ")."))


def _mmbench_letter(answer: str, letters: str = "ABCDE") -> Optional[str]:
    if "Failed to obtain answer via API" in answer:
        return None
    words = [w.strip() for w in answer.split()]
    article = "A" in words and len(words) > 3
    bare = [c for c in letters if c in words]
    if len(bare) == 1 and not article:
        return bare[0]
    for prefix, suffix in _MMBENCH_AFFIXES:
        marked = [c for c in letters if prefix + c + suffix in words]
        if len(marked) == 1:
            return marked[0]
    return None
