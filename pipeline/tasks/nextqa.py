"""NExT-QA multiple choice (``lmms-lab/NExTQA``, config ``MC``, split ``test``; lmms-eval
``nextqa_mc_test``).

Prompt (lmms-eval ``nextqa_doc_to_text_mc``, no instruction line): the question, then
"A. {a0}" .. "E. {a4}". Video ``{video}.mp4`` (or ``.MP4``, as lmms-eval also tries) in
``NExTVideo/``, the folder the repo's ``videos.zip`` unpacks to, found in every layout of
``_media.py`` (``<data>/nextqa/NExTVideo/``, ``<data>/NExTVideo/``,
``$HF_HOME/nextqa/NExTVideo/``). The output is read by
``extract.nextqa_choice`` (lmms-eval's own variant of the MMMU extractor); where it finds
no option lmms-eval picks one at random: here the sample scores 0 and counts in
``unparsed``. Besides lmms-eval's accuracy (``score``), ours per question ``type`` (CW,
CH, TN, TC, TP, DC, DL, DO) and per family (causal, temporal, descriptive: the type's
first letter), as NExT-QA reports them. Generation: the model's default budget, stop at
a blank line (the task names no generation kwargs).
"""

from __future__ import annotations

from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, accuracy, resolve_media
from pipeline.tasks.base import Sample
from pipeline.tasks.common import DEFAULT_UNTIL, LETTERS, option_lines
from pipeline.tasks.extract import nextqa_choice

FAMILIES = {"C": "causal", "T": "temporal", "D": "descriptive"}


class NExTQA(VideoTask):
    name = "nextqa"
    required_text = ("question", "a0", "a1", "a2", "a3", "a4")
    answer_column = "answer"
    answer_choices = tuple(range(5))
    hub = (("lmms-lab/NExTQA", "MC", "test"),)
    max_new_tokens = None
    until = DEFAULT_UNTIL
    videos = MediaLayout("nextqa", "NExTVideo", (".mp4", ".MP4"))

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        options = [str(row[f"a{i}"]).strip() for i in range(5)]
        prompt = "\n".join([str(row["question"]).strip(), *option_lines(options)])
        video, error = resolve_media(row, media_root, self.videos, row["video"])
        qtype = str(row.get("type") or "")
        qid = row.get("qid")
        return Sample(
            id=f"{row['video']}_{qid if qid is not None else row.get('_index')}",
            prompt=prompt,
            video=video,
            answer=LETTERS[int(row["answer"])],
            meta={"options": options, "type": qtype, "family": FAMILIES.get(qtype[:1], "")},
            error=error,
            max_new_tokens=self.max_new_tokens,
            until=self.until,
        )

    def parse(self, output: str, sample: Sample) -> Optional[str]:
        return nextqa_choice((output or "").strip(), dict(zip(LETTERS, sample.meta["options"])))

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        return {**accuracy(results, "type"), **accuracy(results, "family")}


register_task(NExTQA())
