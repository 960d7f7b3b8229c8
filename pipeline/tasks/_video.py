"""What the video benchmarks share: rows with their media root, locating the video
file (in every layout of ``_media.py``), "A. .." options, accuracy (:class:`VideoTask`).
Private to the video task modules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Optional

from pipeline.tasks._media import MediaLayout
from pipeline.tasks.base import Sample, Task
from pipeline.tasks.common import accuracy, count_rows, load_rows, parse_letter
from pipeline.video import hf_home, media_root_for

DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json")
MEDIA_ROOT = "_media_root"  # row key: where rows() found the benchmark's media
_LETTERED = re.compile(r"^\s*([A-Z])[.)]\s*(.*)$", re.S)


def split_option(option: str) -> tuple[Optional[str], str]:
    """``"B. a cup"`` -> ``("B", "a cup")``; ``"a cup"`` -> ``(None, "a cup")``."""
    match = _LETTERED.match(str(option))
    return (match.group(1), match.group(2).strip()) if match else (None, str(option).strip())


def _local_config(data: Optional[str], config: Optional[str]) -> Optional[str]:
    """The config to hand ``load_rows`` for ``data``. A local folder is read from its
    ``<config>/`` subfolder when one exists, but in Video-MME and EgoPlan that name is
    also the media folder (``videomme/data/*.mp4``, ``egoplan/*.mp4``); when that folder
    holds no data files, read the folder itself (``"."``: ``<data>/.`` is ``<data>``)."""
    if not (data and config and (Path(data) / config).is_dir()):
        return config
    has_rows = any(p.suffix in DATA_SUFFIXES for p in (Path(data) / config).rglob("*"))
    return config if has_rows else "."


def media_root_of(row: dict, media_root: Optional[str]) -> str:
    """The root folder the task's media are looked for under: the caller's
    ``media_root``, else the one ``rows()`` recorded, else HF_HOME."""
    return media_root or row.get(MEDIA_ROOT) or media_root_for(None)


def resolve_media(row: dict, media_root: Optional[str], layout: MediaLayout, name: str,
                  what: str = "video") -> tuple[str, Optional[str]]:
    """``(path, error)``: file ``name`` (no extension) of the row found in ``layout`` under
    the row's media root and HF_HOME, or the first candidate and an error naming every
    path tried (``MediaLayout.find``)."""
    return layout.find(media_root_of(row, media_root), hf_home(), str(name), what)


class VideoTask(Task):
    """A multiple-choice video benchmark: rows carry their media root, samples keep the
    options as the dataset has them (stripped) in ``meta["options"]``, the lenient
    scoring reads the letter with ``parse_letter`` against their texts, the metric is
    accuracy. ``sample(row, *, media_root=None)``."""

    modality = "video"

    def rows(self, data: Optional[str] = None, *, limit: Optional[int] = None, split: Optional[str] = None,
             config: Optional[str] = None, start: int = 0, stop: Optional[int] = None) -> Iterator[dict]:
        """``load_rows`` plus the row's default media root (the local data folder, or
        HF_HOME for a hub id) under :data:`MEDIA_ROOT`."""
        root = media_root_for(data)
        config = config or _local_config(data, self.hub[0][1] if self.hub else None)
        for row in load_rows(data, self.hub, limit=limit, split=split, config=config, start=start, stop=stop):
            yield {**row, MEDIA_ROOT: root}

    def count(self, data: Optional[str] = None, *, limit: Optional[int] = None, split: Optional[str] = None,
              config: Optional[str] = None) -> int:
        config = config or _local_config(data, self.hub[0][1] if self.hub else None)
        return count_rows(data, self.hub, limit=limit, split=split, config=config)

    def parse_lenient(self, output: str, sample: Sample) -> Optional[str]:
        return parse_letter(output, [split_option(o)[1] for o in sample.meta["options"]])

    def aggregate(self, results: list[dict]) -> dict[str, float]:
        return accuracy(results)
