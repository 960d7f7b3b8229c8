"""NExT-QA multiple choice (``lmms-lab/NExTQA``, config ``MC``, split ``test``).

Prompt (lmms-eval ``nextqa_doc_to_text_mc``, no instruction line): the question, then
"A. {a0}" .. "E. {a4}". Video ``{video}.mp4`` (or ``.MP4``, as lmms-eval also tries) in
``NExTVideo/``, the folder the repo's ``videos.zip`` unpacks to, found in every layout of
``_media.py`` (``<data>/nextqa/NExTVideo/``, ``<data>/NExTVideo/``,
``$HF_HOME/nextqa/NExTVideo/``). Besides the overall
accuracy, one per question ``type`` (CW, CH, TN, TC, TP, DC, DL, DO) and per family
(causal, temporal, descriptive: the type's first letter), as NExT-QA reports them.
"""

from __future__ import annotations

from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, accuracy, resolve_media
from pipeline.tasks.base import Sample
from pipeline.tasks.common import LETTERS, option_lines
from pipeline.video import DEFAULT_FRAMES

FAMILIES = {"C": "causal", "T": "temporal", "D": "descriptive"}


class NExTQA(VideoTask):
    name = "nextqa"
    hub = (("lmms-lab/NExTQA", "MC", "test"),)
    max_new_tokens = 16
    videos = MediaLayout("nextqa", "NExTVideo", (".mp4", ".MP4"))

    def sample(self, row: dict, *, media_root: Optional[str] = None, num_frames: int = DEFAULT_FRAMES) -> Sample:
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
        )

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        return {**accuracy(results, "type"), **accuracy(results, "family")}


register_task(NExTQA())
