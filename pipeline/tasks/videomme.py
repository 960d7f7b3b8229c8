"""Video-MME (``lmms-lab/Video-MME``, config ``videomme``, split ``test``): 2,700
four-way questions on 900 videos, short / medium / long.

Two tasks: ``videomme`` (frames only) and ``videomme_subtitles``, whose prompt starts
with the subtitle lines shown while the sampled frames are on screen (lmms-eval
``videomme_doc_to_text_subtitle``). Video ``{videoID}.mp4`` (or ``.MP4``, ``.mkv``) in
``data/``, the folder the repo's ``videos_chunked_*.zip`` unpack to; subtitles
``{videoID}.srt`` in ``subtitle/`` (from ``subtitle.zip``); both found in every layout of
``_media.py`` (``<data>/videomme/data/``, ``<data>/data/``, ``$HF_HOME/videomme/data/``).

Which subtitle lines: the frames are ``frame_indices(n_frames, num_frames)`` (pass the
same ``num_frames`` the model samples); a subtitle from ``start`` to ``end`` seconds
covers frames ``int(start * fps) <= i < int(end * fps)`` and is kept when it covers
a sampled frame. Kept lines are listed in time order (lmms-eval goes through a
``set``, so its order is arbitrary), with markup such as ``<font ...>`` removed.
"""

from __future__ import annotations

import re
from typing import Optional

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, accuracy, resolve_media, split_option
from pipeline.tasks.base import Sample
from pipeline.tasks.common import MC_INSTRUCTION
from pipeline.video import DEFAULT_FRAMES, VideoError, frame_indices, video_fps_and_length

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and "
               "the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
SUBTITLES_HEADER = "This video's subtitles are listed below:"
NO_SUBTITLES = "No subtitles available"
SUBTITLES_ANSWER = "The best answer is:"

_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?")
_TAG = re.compile(r"<[^>]+>")


def _seconds(stamp: str) -> float:
    match = _TIME.search(stamp)
    if match is None:
        raise ValueError(f"bad SRT time {stamp!r}")
    h, m, s, ms = match.groups()
    return int(h) * 3600 + int(m) * 60 + int(s) + int((ms or "0").ljust(3, "0")) / 1000


def read_srt(path: str) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, text)`` per cue of an SRT file, markup removed, lines of a
    cue joined with a space; cues without a parsable time line are skipped."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        blocks = re.split(r"\n\s*\n", f.read().replace("\r\n", "\n").strip())
    cues = []
    for block in blocks:
        lines = block.strip().split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        start, _, end = lines[timing].partition("-->")
        try:
            span = (_seconds(start), _seconds(end))
        except ValueError:
            continue
        text = " ".join(_TAG.sub("", line).strip() for line in lines[timing + 1:]).strip()
        if text:
            cues.append((*span, text))
    return cues


def subtitles_at_frames(cues: list[tuple[float, float, str]], fps: float, n_frames: int, num_frames: int) -> list[str]:
    """Texts of the cues that cover one of the ``num_frames`` sampled frames, in time order.

    >>> subtitles_at_frames([(0.0, 1.0, "a"), (1.0, 2.0, "b"), (2.5, 2.9, "c")], 10.0, 30, 3)
    ['a', 'b']

    (frames 0, 14, 29 are sampled; "c" covers frames 25..28 only.)
    """
    frames = frame_indices(n_frames, num_frames)
    return [text for start, end, text in cues
            if any(int(start * fps) <= i < int(end * fps) for i in frames)]


class VideoMME(VideoTask):
    name = "videomme"
    hub = (("lmms-lab/Video-MME", "videomme", "test"),)
    max_new_tokens = 16
    with_subtitles = False
    videos = MediaLayout("videomme", "data", (".mp4", ".MP4", ".mkv"))
    subtitles = MediaLayout("videomme", "subtitle", (".srt",))

    def sample(self, row: dict, *, media_root: Optional[str] = None, num_frames: int = DEFAULT_FRAMES) -> Sample:
        options = [str(o).strip() for o in row["options"]]
        video, error = resolve_media(row, media_root, self.videos, row["videoID"])
        question = [INSTRUCTION, str(row["question"]).strip(), *options]
        if not self.with_subtitles:
            prompt = "\n".join(question + [MC_INSTRUCTION])
        else:
            srt, no_srt = resolve_media(row, media_root, self.subtitles, row["videoID"], "subtitles")
            subtitles, sub_error = self._subtitles(video, None if no_srt else srt, num_frames, error is None)
            error = error or sub_error
            prompt = "\n".join([SUBTITLES_HEADER, subtitles, *question, SUBTITLES_ANSWER])
        meta = {"options": [split_option(o)[1] for o in options], "duration": str(row.get("duration") or ""),
                "domain": row.get("domain"), "task_type": row.get("task_type"), "videoID": str(row["videoID"])}
        if self.with_subtitles:
            meta["num_frames"] = num_frames
        return Sample(id=str(row["question_id"]), prompt=prompt, video=video, answer=str(row["answer"]).strip(),
                      meta=meta, error=error, max_new_tokens=self.max_new_tokens)

    @staticmethod
    def _subtitles(video: str, srt: Optional[str], num_frames: int, video_exists: bool) -> tuple[str, Optional[str]]:
        """(the subtitle block of the prompt, an error or None); ``srt`` is None when the
        video has no subtitle file (lmms-eval then says so in the prompt)."""
        if srt is None:
            return NO_SUBTITLES, None
        if not video_exists:
            return "", None  # the missing video is the row's error already
        try:
            fps, n_frames = video_fps_and_length(video)
            return "\n".join(subtitles_at_frames(read_srt(srt), fps, n_frames, num_frames)), None
        except (VideoError, OSError, ValueError) as err:
            return "", f"cannot place subtitles {srt}: {err}"

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        return accuracy(results, "duration")


class VideoMMESubtitles(VideoMME):
    name = "videomme_subtitles"
    with_subtitles = True


register_task(VideoMME())
register_task(VideoMMESubtitles())
