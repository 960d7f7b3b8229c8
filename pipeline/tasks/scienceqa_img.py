"""ScienceQA-IMG: multiple choice over ``choices`` (lmms-eval ``scienceqa_img``).

Prompt as lmms-eval's ``sqa_doc_to_text`` builds it: "Context: {hint}" on its own line
when the hint is not empty, the question, options "A. .." one per line, then the letter
instruction. ``answer`` is the index of the right choice. Scoring as lmms-eval's
``sqa_process_results``: only the letter alone (any case) or an output starting with
"X." (capital X) counts, so "(A)" and "A) .." are wrong; the lenient scoring reads them
(and the option's text). Metric: percent right. Generation: 16 new tokens, stop at a
blank line (lmms-eval scienceqa_img.yaml).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import (DEFAULT_UNTIL, LETTERS, MC_INSTRUCTION, DatasetTask, image_sample, option_lines,
                                   parse_letter, percent, result_score)


def sqa_letter(output: str) -> str:
    """The letter lmms-eval credits, lower-cased, or "": the whole (stripped) output
    when it is one character (any case), else the first of an output starting "X."."""
    pred = output.strip()
    if len(pred.lower()) == 1:
        return pred.lower()
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return pred[0].lower()
    return ""


class ScienceQAImg(DatasetTask):
    name = "scienceqa_img"
    required_text = ("question",)
    answer_column = "answer"
    hub = (("lmms-lab/ScienceQA", "ScienceQA-IMG", "test"),)
    max_new_tokens = 16
    until = DEFAULT_UNTIL

    def check_row(self, row):
        problem = super().check_row(row)
        choices = row.get("choices") or []
        if problem is None and str(row["answer"]).strip() not in {str(i) for i in range(len(choices))}:
            problem = f"row: answer must index one of the {len(choices)} choices, got {str(row['answer'])[:40]!r}"
        return problem

    def sample(self, row, *, media_root=None):
        choices = list(row["choices"])
        hint = row.get("hint")
        context = f"Context: {hint}\n" if hint else hint  # lmms-eval prints a None hint as "None"
        body = "\n".join(option_lines([str(c) for c in choices]))
        return image_sample(
            self, str(row["_index"]), f"{context}{row['question']}\n{body}\n{MC_INSTRUCTION}", [row.get("image")],
            answer=LETTERS[int(row["answer"])], meta={"choices": [str(c) for c in choices],
                                                      "subject": row.get("subject")},
            root=media_root,
        )

    def parse(self, output, sample):
        return sqa_letter(output or "")

    def score(self, parsed, sample):
        return float(parsed is not None and parsed.lower() == sample.answer.lower())

    def parse_lenient(self, output, sample):
        return parse_letter(output, sample.meta["choices"])

    def aggregate(self, results):
        return {"score": percent([result_score(r) for r in results])}


register_task(ScienceQAImg())
