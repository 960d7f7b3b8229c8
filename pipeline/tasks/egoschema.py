"""EgoSchema (``lmms-lab/egoschema``, config ``Subset``): 500 five-way questions on
three-minute egocentric clips, the only part with public answers.

Prompt (lmms-eval ``egoschema_doc_to_text``): the question, each option on its own
line (the dataset's options already read "A. ..."; bare ones get the letter), then
:data:`MC_INSTRUCTION`. Video ``{video_idx}.mp4`` (or ``.MP4``) in ``videos/``, the folder
the repo's ``videos_chunked_*.zip`` unpack to, found in every layout of ``_media.py``
(``<data>/egoschema/videos/``, ``<data>/videos/``, ``$HF_HOME/egoschema/videos/``).
"""

from __future__ import annotations

from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, lettered, resolve_media, split_option
from pipeline.tasks.base import Sample
from pipeline.tasks.common import LETTERS, MC_INSTRUCTION
from pipeline.video import DEFAULT_FRAMES

class EgoSchema(VideoTask):
    name = "egoschema"
    hub = (("lmms-lab/egoschema", "Subset", "test"),)
    max_new_tokens = 16
    videos = MediaLayout("egoschema", "videos", (".mp4", ".MP4"))

    def sample(self, row: dict, *, media_root: Optional[str] = None, num_frames: int = DEFAULT_FRAMES) -> Sample:
        options = list(row.get("option") or [])
        lines = lettered(options)
        prompt = "\n".join([str(row["question"]).strip(), *lines, MC_INSTRUCTION])
        video, error = resolve_media(row, media_root, self.videos, row["video_idx"])
        answer = row.get("answer")
        if answer in (None, "") and error is None:
            error = "no answer (EgoSchema's full config is scored online; use config Subset)"
        return Sample(
            id=str(row["question_idx"]),
            prompt=prompt,
            video=video,
            answer=LETTERS[int(answer)] if answer not in (None, "") else None,
            meta={"options": [split_option(o)[1] for o in options], "video_idx": str(row["video_idx"])},
            error=error,
            max_new_tokens=self.max_new_tokens,
        )


register_task(EgoSchema())
