"""MMBench (English, dev): multiple choice with circular evaluation (lmms-eval ``mmbench_en_dev``).

Prompt as lmms-eval's ``mmbench_doc_to_text`` builds it: "{hint} {question} There are
several options:" (the hint unless it is missing or the string "nan"), the options
"A. .." one per line (those present, non-empty and not "nan"; "None" is an option like
any other), a blank line, then the letter instruction.

Each question appears in several rows whose options are rotated; their ``index``
values agree modulo 1,000,000, and the row with ``index`` < 1,000,000 is the question's
own. Scoring as lmms-eval's ``MMBench_Evaluator.eval_result``: each row's output is read
by ``extract.mmbench_option`` (a letter, else the one option whose text it contains); a
question is right when every one of its rows is. Where a row cannot be read, lmms-eval
asks GPT and then picks a random letter; that question scores 0 here and counts in
``unparsed`` (unless another of its rows is already wrong). Metrics: ``score`` (percent
of questions), ``category/<name>`` and ``l2/<name>`` (``L2-category``), ``questions``.
Generation: 1024 new tokens, stop at "ASSISTANT:" (lmms-eval mmbench_en_dev.yaml).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import LETTERS, MC_INSTRUCTION, DatasetTask, image_sample, is_na, parse_letter, percent
from pipeline.tasks.extract import mmbench_option

CIRCULAR = 1_000_000
HEAD = "There are several options:"  # mmbench.yaml metadata.sys_prompt


def options_text(row: dict) -> str:
    """The options block of the prompt (``MMBench_Evaluator.create_options_prompt``)."""
    lines = [HEAD]
    for letter in "ABCDE":
        value = row.get(letter)
        if value and not is_na(value) and value != "nan":
            lines.append(f"{letter}. {value}")
    return "\n".join(lines).rstrip("\n")


def choices(row: dict) -> dict[str, str]:
    """The option texts the evaluator matches outputs against (``build_choices``): A-D,
    each unless missing; an absent column reads "nan", as lmms-eval's results carry it."""
    values = {letter: row.get(letter, "nan") for letter in "ABCD"}
    return {letter: str(value) for letter, value in values.items() if not is_na(value)}


class MMBench(DatasetTask):
    name = "mmbench"
    required_text = ("question", "A", "B")
    hub = (("lmms-lab/MMBench", "en", "dev"),)
    max_new_tokens = 1024
    until = ("ASSISTANT:",)

    def sample(self, row, *, media_root=None):
        hint = row.get("hint")
        head = f"{row['question']} {options_text(row)}"
        if not is_na(hint) and hint != "nan":
            head = f"{hint} {head}"
        prompt = f"{head}\n\n{MC_INSTRUCTION}"
        options = [str(row[c]) for c in LETTERS[:5] if c in row and row[c] and not is_na(row[c]) and row[c] != "nan"]
        l2 = row.get("L2-category", row.get("l2-category"))
        return image_sample(
            self, str(row["index"]), prompt, [row.get("image")], answer=row["answer"],
            meta={"index": int(row["index"]), "category": row.get("category"), "l2_category": l2,
                  "choices": choices(row), "options": options},
            root=media_root,
        )

    def parse(self, output, sample):
        return mmbench_option(str((output or "").strip()), sample.meta["choices"])

    def parse_lenient(self, output, sample):
        return parse_letter(output, sample.meta["options"])

    def aggregate(self, results):
        """lmms-eval's circular evaluation over the questions whose own row is present."""
        rows = sorted(results, key=lambda r: r["meta"]["index"])
        by_question: dict[int, list[dict]] = {}
        for r in rows:
            by_question.setdefault(r["meta"]["index"] % CIRCULAR, []).append(r)
        hits, unparsed, categories, l2 = [], 0, {}, {}
        for own in (r for r in rows if r["meta"]["index"] < CIRCULAR):
            group = by_question[own["meta"]["index"]]
            wrong = any(r.get("error") or (r["parsed"] is not None and r["parsed"] != r["answer"]) for r in group)
            guessed = not wrong and any(r["parsed"] is None for r in group)
            unparsed += guessed
            hit = float(not wrong and not guessed)
            hits.append(hit)
            for groups, key in ((categories, "category"), (l2, "l2_category")):
                if not is_na(own["meta"].get(key)):
                    groups.setdefault(own["meta"][key], []).append(hit)
        return {"score": percent(hits), "questions": float(len(hits)), "unparsed": float(unparsed),
                **{f"category/{c}": percent(h) for c, h in sorted(categories.items())},
                **{f"l2/{c}": percent(h) for c, h in sorted(l2.items())}}


register_task(MMBench())
