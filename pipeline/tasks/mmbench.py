"""MMBench (English, dev): multiple choice with circular evaluation (lmms-eval ``mmbench_en_dev``).

Prompt as lmms-eval builds it: "{hint} {question} There are several options:" (the hint
only when present), the options "A. .." one per line, then the letter instruction.
Each question appears in several rows whose options are rotated; their ``index`` values
agree modulo 1,000,000. Metric: a question counts only when every one of its rows is
answered right (``score``, percent over questions); ``per_row`` is plain accuracy.
lmms-eval asks GPT to map outputs it cannot read to a letter and otherwise guesses;
we use the deterministic letter parser, and generate 16 tokens (lmms-eval allows 1024).
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.tasks import register_task
from pipeline.tasks.common import (LETTERS, MC_INSTRUCTION, DatasetTask, image_sample, is_missing, option_lines,
                                   parse_letter, percent, result_score)

CIRCULAR = 1_000_000


class MMBench(DatasetTask):
    name = "mmbench"
    hub = (("lmms-lab/MMBench", "en", "dev"),)
    max_new_tokens = 16

    def sample(self, row, *, media_root=None):
        options = [str(row[c]) for c in LETTERS[:5] if c in row and not is_missing(row[c])]
        head = f"{row['question']} There are several options:"
        if not is_missing(row.get("hint")):
            head = f"{row['hint']} {head}"
        prompt = "\n".join([head, *option_lines(options), MC_INSTRUCTION])
        return image_sample(
            self, str(row["index"]), prompt, [row.get("image")], answer=row["answer"],
            meta={"index": int(row["index"]), "category": row.get("category"), "options": options},
            root=media_root,
        )

    def parse(self, output, sample):
        return parse_letter(output, sample.meta["options"])

    def aggregate(self, results):
        questions = defaultdict(list)
        for r in results:
            questions[r["meta"]["index"] % CIRCULAR].append(result_score(r))
        return {
            "score": percent([float(all(s == 1.0 for s in rows)) for rows in questions.values()]),
            "per_row": percent([result_score(r) for r in results]),
        }


register_task(MMBench())
