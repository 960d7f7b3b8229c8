"""EgoPlan-Bench (``EgoLife-v1/EgoPlan`` or ``lmms-lab/EgoPlan``, config ``egoplan``,
split ``validation``): pick the next action towards a goal from an egocentric video.

Prompt (lmms-eval ``egoplan_doc_to_text`` as the spec words it): a goal sentence,
"My current task is to {goal}." or, when the goal's first word ends in "ing",
"I am tasked with {goal}."; the fixed progress / field-of-view / next-action
sentences; "A. .." .. "D. .."; "Answer with the option's letter from the given
choices". Only the video is passed: ``{sample_id}.mp4`` (or ``.MP4``, ``.mkv``), bare files
in the repo's ``videos_chunked_*.zip``, found in every layout of ``_media.py``
(``<data>/egoplan/``, ``<data>/`` beside the repo's ``egoplan/`` rows, ``$HF_HOME/egoplan/``).
"""

from __future__ import annotations

from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, resolve_media
from pipeline.tasks.base import Sample
from pipeline.tasks.common import option_lines
from pipeline.video import DEFAULT_FRAMES

CONTEXT = ("The task's progress is demonstrated in the provided video. My current field of view is shown "
           "in the provided image. What should be my next action?")
INSTRUCTION = "Answer with the option's letter from the given choices"


def goal_sentence(goal: str) -> str:
    """``"making tea"`` -> ``"I am tasked with making tea."``;
    ``"make tea"`` -> ``"My current task is to make tea."``."""
    goal = " ".join(str(goal).split())
    words = goal.split()
    if words and words[0].lower().endswith("ing"):
        return f"I am tasked with {goal}."
    return f"My current task is to {goal}."


class EgoPlan(VideoTask):
    name = "egoplan"
    hub = (("EgoLife-v1/EgoPlan", "egoplan", "validation"), ("lmms-lab/EgoPlan", "egoplan", "validation"))
    max_new_tokens = 16
    videos = MediaLayout("egoplan", "", (".mp4", ".MP4", ".mkv"))

    def sample(self, row: dict, *, media_root: Optional[str] = None, num_frames: int = DEFAULT_FRAMES) -> Sample:
        options = [str(row[f"choice_{c}"]).strip() for c in "abcd"]
        prompt = "\n".join([f"{goal_sentence(row['task_goal'])} {CONTEXT}", *option_lines(options), INSTRUCTION])
        video, error = resolve_media(row, media_root, self.videos, row["sample_id"])
        return Sample(
            id=str(row["sample_id"]),
            prompt=prompt,
            video=video,
            answer=str(row["golden_choice_idx"]).strip().upper(),
            meta={"options": options, "video_id": str(row.get("video_id") or "")},
            error=error,
            max_new_tokens=self.max_new_tokens,
        )


register_task(EgoPlan())
