"""EgoPlan-Bench (``EgoLife-v1/EgoPlan`` or ``lmms-lab/EgoPlan``, config ``egoplan``,
split ``validation``): pick the next action towards a goal from an egocentric video
(lmms-eval ``egoplan``).

Prompt (lmms-eval ``egoplan_doc_to_text``): a goal containing "goal" is cut to what
follows its first "to"; then "I am tasked with {goal}." when its first word ends in
"ing", else "My current task is to {goal}."; the fixed progress / field-of-view /
next-action sentences and "Please output the most reasonable action you think,
expressed in a short phrase."; "A. .." .. "D. .." as the dataset has them; "Answer with
the option's letter from the given choices". Only the video is passed: ``{sample_id}.mp4``
(or ``.MP4``, ``.mkv``), bare files in the repo's ``videos_chunked_*.zip``, found in every
layout of ``_media.py`` (``<data>/egoplan/``, ``<data>/`` beside the repo's ``egoplan/``
rows, ``$HF_HOME/egoplan/``). Scoring: ``extract.egoplan_letter`` (the first A-D
after dropping answer prefixes), right when it equals ``golden_choice_idx``.
Generation: 4096 new tokens, stop at a blank line (lmms-eval egoplan.yaml).
"""

from __future__ import annotations

from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, resolve_media
from pipeline.tasks.base import Sample
from pipeline.tasks.common import DEFAULT_UNTIL
from pipeline.tasks.extract import egoplan_letter

CONTEXT = ("The task's progress is demonstrated in the provided video. My current field of view is shown "
           "in the provided image. What should be my next action? Please output the most reasonable action "
           "you think, expressed in a short phrase.")
INSTRUCTION = "Answer with the option's letter from the given choices"


def goal_sentence(goal: str) -> str:
    """``"making tea"`` -> ``"I am tasked with making tea."``;
    ``"make tea"`` -> ``"My current task is to make tea."``;
    ``"The goal is to make tea"`` -> ``"My current task is to make tea."``."""
    if "goal" in goal and "to" in goal:  # lmms-eval fails on a goal with "goal" and no "to"
        goal = goal.split("to", 1)[1].strip()
    words = goal.split()
    if words and words[0].endswith("ing"):
        return f"I am tasked with {goal}."
    return f"My current task is to {goal}."


class EgoPlan(VideoTask):
    name = "egoplan"
    required_text = ("question", "task_goal", "choice_a", "choice_b", "choice_c", "choice_d")
    answer_column = "golden_choice_idx"
    answer_choices = tuple("ABCD")
    hub = (("EgoLife-v1/EgoPlan", "egoplan", "validation"), ("lmms-lab/EgoPlan", "egoplan", "validation"))
    max_new_tokens = 4096
    until = DEFAULT_UNTIL
    videos = MediaLayout("egoplan", "", (".mp4", ".MP4", ".mkv"))

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        options = [str(row[f"choice_{c}"]) for c in "abcd"]
        lines = [f"{goal_sentence(str(row['task_goal']))} {CONTEXT}"]
        lines += [f"{letter}. {text}" for letter, text in zip("ABCD", options)]
        video, error = resolve_media(row, media_root, self.videos, row["sample_id"])
        return Sample(
            id=str(row["sample_id"]),
            prompt="\n".join(lines + [INSTRUCTION]),
            video=video,
            answer=row["golden_choice_idx"],
            meta={"options": [o.strip() for o in options], "video_id": str(row.get("video_id") or "")},
            error=error,
            max_new_tokens=self.max_new_tokens,
            until=self.until,
        )

    def parse(self, output: str, sample: Sample) -> str:
        return egoplan_letter((output or "").strip())


register_task(EgoPlan())
