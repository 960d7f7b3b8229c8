"""ScienceQA-IMG: multiple choice over ``choices`` (lmms-eval ``scienceqa_img``).

Prompt as lmms-eval builds it: "Context: {hint}" when the hint is not empty, the
question, options "A. .." one per line, then the letter instruction. ``answer`` is the
index of the right choice. Metric: letter match (deterministic letter parser), percent.
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import (LETTERS, DatasetTask, image_sample, is_missing, mc_prompt, parse_letter,
                                   percent, result_score)


class ScienceQAImg(DatasetTask):
    name = "scienceqa_img"
    hub = (("lmms-lab/ScienceQA", "ScienceQA-IMG", "test"),)
    max_new_tokens = 16

    def sample(self, row, *, media_root=None):
        choices = [str(c) for c in row["choices"]]
        context = "" if is_missing(row.get("hint")) else f"Context: {row['hint']}"
        return image_sample(
            self, str(row["_index"]), mc_prompt(row["question"], choices, context=context), [row.get("image")],
            answer=LETTERS[int(row["answer"])], meta={"choices": choices, "subject": row.get("subject")},
            root=media_root,
        )

    def parse(self, output, sample):
        return parse_letter(output, sample.meta["choices"])

    def aggregate(self, results):
        return {"score": percent([result_score(r) for r in results])}


register_task(ScienceQAImg())
