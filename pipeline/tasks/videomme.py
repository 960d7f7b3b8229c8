"""Video-MME (``lmms-lab/Video-MME``, config ``videomme``, split ``test``): 2,700
four-way questions on 900 videos, short / medium / long (lmms-eval ``videomme`` and
``videomme_w_subtitle``).

Two tasks: ``videomme`` (frames only) and ``videomme_subtitles``. Prompts as lmms-eval's
``videomme_doc_to_text`` / ``videomme_doc_to_text_subtitle`` build them with their default
kwargs: the instruction, the question, the options as the dataset has them, then a blank
line and the letter instruction; with subtitles, first "This video's subtitles are
listed below: " and the subtitles, and "The best answer is:" at the end. Video
``{videoID}.mp4`` (or ``.MP4``, ``.mkv``) in ``data/``, the folder the repo's
``videos_chunked_*.zip`` unpack to; subtitles ``{videoID}.srt`` in ``subtitle/`` (from
``subtitle.zip``); both found in every layout of ``_media.py`` (``<data>/videomme/data/``,
``<data>/data/``, ``$HF_HOME/videomme/data/``).

Which subtitles (lmms-eval's rule, whatever number of frames the model is shown): the
video's 32 uniformly sampled frames (``frame_num: 32``, linspace rounded down) by its
fps and frame count; a cue from ``start`` to ``end`` seconds covers frames
``int(start * fps) <= i < int(end * fps)``; of each cue that covers a sampled frame, the
first ``<font color="white" size=".72c">`` span (cues without one are left out), in the
order of the set of their indices, as lmms-eval lists them. Without a subtitle file:
"No subtitles available".

Scoring: ``extract.mcq_letter`` (lmms-eval's ``extract_mcq_answer``, letters A-D; "" when
it finds none), right when it equals ``answer``. Metrics as lmms-eval's
``videomme_aggregate_results``: ``score`` (percent), and per ``duration/<d>``,
``domain/<d>``, ``sub_category/<s>`` and ``task_type/<t>``. Generation: 16 new tokens,
stop at a blank line.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from pipeline.tasks import register_task
from pipeline.tasks._media import MediaLayout
from pipeline.tasks._video import VideoTask, resolve_media
from pipeline.tasks.base import Sample
from pipeline.tasks.common import DEFAULT_UNTIL, MC_INSTRUCTION, result_score
from pipeline.tasks.extract import mcq_letter
from pipeline.video import VideoError, video_fps_and_length

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and "
               "the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
SUBTITLES_HEADER = "This video's subtitles are listed below: "
NO_SUBTITLES = "No subtitles available"
SUBTITLES_ANSWER = "The best answer is:"
SUBTITLE_FRAMES = 32  # videomme_w_subtitle.yaml: lmms_eval_specific_kwargs.default.frame_num
GROUPS = ("duration", "domain", "sub_category", "task_type")  # columns lmms-eval reports by

_FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')


def _seconds(stamp: str) -> float:
    """``"00:01:02,500"`` -> 62.5, read as lmms-eval reads it (``"1,5"`` is 1.005 s)."""
    h, m, s_ms = stamp.split(":")
    s, ms = s_ms.split(",")
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def read_srt(path: str) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, text)`` per cue of an SRT file, as lmms-eval's ``load_subtitles``
    reads it: blocks split at blank lines, the time on a block's second line, its lines
    from the third on joined with a space (markup kept); a later cue with the same
    times replaces an earlier one. Raises ValueError on a time it cannot read."""
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    cues: dict[tuple[float, float], str] = {}
    for block in blocks:
        lines = block.split("\n")
        if block.strip() and len(lines) >= 3:
            start, end = lines[1].split(" --> ")[:2]
            cues[(_seconds(start), _seconds(end))] = " ".join(lines[2:])
    return [(start, end, text) for (start, end), text in cues.items()]


def subtitles_at_frames(cues: list[tuple[float, float, str]], fps: float, n_frames: int,
                        num_frames: int = SUBTITLE_FRAMES) -> list[str]:
    """The first font span of each cue covering one of ``num_frames`` uniformly sampled
    frames, in lmms-eval's order (that of the set of the cues' indices).

    >>> span = lambda t: f'<font color="white" size=".72c">{t}</font>'
    >>> subtitles_at_frames([(0.0, 1.0, span("a")), (1.0, 2.0, span("b")), (2.5, 2.9, span("c"))], 10.0, 30, 3)
    ['a', 'b']

    (frames 0, 14, 29 are sampled; "c" covers frames 25..28 only.)
    """
    frames = np.linspace(0, n_frames - 1, num_frames, dtype=int).tolist()
    spans = [(int(start * fps), int(end * fps)) for start, end, _ in cues]
    hits = [i for frame in frames for i, (first, last) in enumerate(spans) if first <= frame < last]
    texts = [_FONT.findall(cues[i][2]) for i in set(hits)]  # CPython's set order is lmms-eval's order
    return [found[0] for found in texts if found]


class VideoMME(VideoTask):
    name = "videomme"
    required_text = ("question", "videoID")
    answer_column = "answer"
    answer_choices = tuple("ABCD")
    hub = (("lmms-lab/Video-MME", "videomme", "test"),)
    max_new_tokens = 16
    until = DEFAULT_UNTIL
    with_subtitles = False
    videos = MediaLayout("videomme", "data", (".mp4", ".MP4", ".mkv"))
    subtitles = MediaLayout("videomme", "subtitle", (".srt",))

    def sample(self, row: dict, *, media_root: Optional[str] = None) -> Sample:
        options = [str(o) for o in row["options"]]
        video, error = resolve_media(row, media_root, self.videos, row["videoID"])
        question = f"{INSTRUCTION}\n{row['question']}\n" + "\n".join(options)
        if not self.with_subtitles:
            prompt = f"{question}\n\n{MC_INSTRUCTION}"
        else:
            srt, no_srt = resolve_media(row, media_root, self.subtitles, row["videoID"], "subtitles")
            subtitles, sub_error = self._subtitles(video, None if no_srt else srt, error is None)
            error = error or sub_error
            prompt = f"{SUBTITLES_HEADER}\n{subtitles}\n{question}\n{SUBTITLES_ANSWER}"
        meta = {"options": [o.strip() for o in options], "videoID": str(row["videoID"]),
                **{key: row.get(key) for key in GROUPS}}
        return Sample(id=str(row["question_id"]), prompt=prompt, video=video, answer=row["answer"], meta=meta,
                      error=error, max_new_tokens=self.max_new_tokens, until=self.until)

    @staticmethod
    def _subtitles(video: str, srt: Optional[str], video_exists: bool) -> tuple[str, Optional[str]]:
        """(the subtitle block of the prompt, an error or None); ``srt`` is None when the
        video has no subtitle file (lmms-eval then says so in the prompt)."""
        if srt is None:
            return NO_SUBTITLES, None
        if not video_exists:
            return "", None  # the missing video is the row's error already
        try:
            fps, n_frames = video_fps_and_length(video)
            return "\n".join(subtitles_at_frames(read_srt(srt), fps, n_frames)), None
        except (VideoError, OSError, ValueError) as err:
            return "", f"cannot place subtitles {srt}: {err}"

    def parse(self, output: str, sample: Sample) -> str:
        return mcq_letter((output or "").strip(), choices=("A", "B", "C", "D"))

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        """lmms-eval's percentages: right / answered, overall and per group."""
        def pct(rows):
            return 100 * sum(result_score(r) for r in rows) / len(rows) if rows else 0

        metrics = {"score": pct(results), "n": float(len(results)),
                   "errors": float(sum(bool(r.get("error")) for r in results))}
        for key in GROUPS:
            groups: dict[str, list] = {}
            for r in results:
                if r["meta"].get(key) not in (None, ""):
                    groups.setdefault(str(r["meta"][key]), []).append(r)
            metrics.update({f"{key}/{name}": pct(rows) for name, rows in sorted(groups.items())})
        return metrics


class VideoMMESubtitles(VideoMME):
    name = "videomme_subtitles"
    with_subtitles = True


register_task(VideoMME())
register_task(VideoMMESubtitles())
