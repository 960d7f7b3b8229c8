"""TextVQA (validation): short answers about text in images, VQA accuracy (lmms-eval ``textvqa_val``).

Prompt as lmms-eval builds it: the question through ``str.capitalize()`` (first letter
upper, the rest lower), then the short-answer line; no OCR tokens. Metric: VQA accuracy
against the 10 human answers (``common.vqa_accuracy``), ``score`` in percent.
Generation: the model's default budget, stop at "ASSISTANT:" (lmms-eval's template
names no max_new_tokens).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import SHORT_ANSWER, VQATask, image_sample


class TextVQA(VQATask):
    name = "textvqa"
    required_text = ("question",)
    hub = (("lmms-lab/textvqa", None, "validation"),)
    max_new_tokens = None
    until = ("ASSISTANT:",)

    def sample(self, row, *, media_root=None):
        return image_sample(
            self, str(row["question_id"]), f"{row['question'].capitalize()}\n{SHORT_ANSWER}", [row.get("image")],
            answer=list(row["answers"] or []), meta={"question_id": row["question_id"]}, root=media_root,
        )


register_task(TextVQA())
