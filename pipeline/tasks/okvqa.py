"""OK-VQA (val2014): outside-knowledge short answers, VQA accuracy (lmms-eval ``ok_vqa_val2014``).

Prompt: the question, "When the provided information is insufficient, respond with
'Unanswerable'.", then the short-answer line (lmms-eval's default post-prompt).
Metric: VQA accuracy against the human answers, ``score`` in percent. Generation: the
model's default budget, stop at "ASSISTANT:" (lmms-eval's template names no
max_new_tokens).
"""

from __future__ import annotations

from pipeline.tasks import register_task
from pipeline.tasks.common import SHORT_ANSWER, VQATask, image_sample

UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."


class OKVQA(VQATask):
    name = "okvqa"
    required_text = ("question",)
    hub = (("lmms-lab/OK-VQA", None, "val2014"),)
    max_new_tokens = None
    until = ("ASSISTANT:",)

    def sample(self, row, *, media_root=None):
        answers = [a["answer"] if isinstance(a, dict) else str(a) for a in row["answers"] or []]
        return image_sample(
            self, str(row["question_id"]), f"{row['question']}\n{UNANSWERABLE}\n{SHORT_ANSWER}", [row.get("image")],
            answer=answers, meta={"question_id": row["question_id"]}, root=media_root,
        )


register_task(OKVQA())
