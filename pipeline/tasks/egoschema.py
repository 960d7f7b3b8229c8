"""EgoSchema (``lmms-lab/egoschema``, config ``Subset``): 500 five-way questions on
three-minute egocentric clips, the only part with public answers (lmms-eval
``egoschema_subset``).

Prompt (lmms-eval ``egoschema_doc_to_text``): the question, each option on its own line
as the dataset has it, then :data:`MC_INSTRUCTION`. Video ``{video_idx}.mp4`` (or ``.MP4``)
in ``videos/``, the folder the repo's ``videos_chunked_*.zip`` unpack to, found in every
layout of ``_media.py`` (``<data>/egoschema/videos/``, ``<data>/videos/``,
``$HF_HOME/egoschema/videos/``). The output is read by
``extract.mmmu_choice`` (lmms-eval's ``parse_multi_choice_response``), so "C is cleaning
..." reads as C (EgoSchema's options name the camera wearer "C"); where it finds no
option lmms-eval picks one at random: here the sample scores 0 and counts in
``unparsed``. ``answer`` is the index as the dataset stores it ("0".."4"), compared with
the chosen letter's index as strings. Generation: 16 new tokens, stop at a blank line.
"""

from __future__ import annotations

from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, resolve_media
from pipeline.tasks.base import Sample
from pipeline.tasks.common import DEFAULT_UNTIL, LETTERS, MC_INSTRUCTION
from pipeline.tasks.extract import mmmu_choice


class EgoSchema(VideoTask):
    name = "egoschema"
    required_text = ("question",)
    hub = (("lmms-lab/egoschema", "Subset", "test"),)
    max_new_tokens = 16
    until = DEFAULT_UNTIL
    videos = MediaLayout("egoschema", "videos", (".mp4", ".MP4"))

    def check_row(self, row: dict) -> Optional[str]:
        answer = row.get("answer")  # missing in the full config: sample() says so
        if answer not in (None, "") and str(answer).strip() not in ("0", "1", "2", "3", "4"):
            return f"row: answer must be an option index 0-4, got {str(answer)[:40]!r}"
        return super().check_row(row)

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        options = list(row.get("option") or [])
        prompt = "".join([str(row["question"]), *(f"\n{o}" for o in options), f"\n{MC_INSTRUCTION}"])
        video, error = resolve_media(row, media_root, self.videos, row["video_idx"])
        answer = row.get("answer")
        if answer in (None, "") and error is None:
            error = "no answer (EgoSchema's full config is scored online; use config Subset)"
        return Sample(
            id=str(row["question_idx"]),
            prompt=prompt,
            video=video,
            answer=None if answer in (None, "") else str(answer),
            meta={"options": [str(o).strip() for o in options], "video_idx": str(row["video_idx"])},
            error=error,
            max_new_tokens=self.max_new_tokens,
            until=self.until,
        )

    def parse(self, output: str, sample: Sample) -> Optional[str]:
        return mmmu_choice((output or "").strip(), dict(zip(LETTERS, sample.meta["options"])))

    def score(self, parsed: Optional[str], sample: Sample) -> float:
        return float(parsed is not None and str(LETTERS.index(parsed)) == sample.answer)


register_task(EgoSchema())
