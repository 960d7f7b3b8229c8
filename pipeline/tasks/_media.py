"""Where a benchmark's media files are, in each layout a user can have them.

A video benchmark's hub repository keeps its rows as parquet and its videos in zip
archives; where the unzipped files end up depends on who unzipped them. For a root
folder R (the ``--data`` folder, or ``--media-root``), Video-MME's ``fFjv93ACGo8.mp4`` is
looked for in this order:

1. spec: ``R/videomme/data/fFjv93ACGo8.mp4``, a local copy in the spec's layout
   (../shared/spec/benchmarks.md; ``python -m pipeline.samples`` writes it);
2. repo: ``R/data/fFjv93ACGo8.mp4``, the repository downloaded with
   ``huggingface-cli download lmms-lab/Video-MME --repo-type dataset --local-dir R`` and
   its zips unzipped in place (the rows then sit at ``R/videomme/test-00000-of-00001.parquet``);
3. lmms-eval: ``$HF_HOME/videomme/data/fFjv93ACGo8.mp4``, where lmms-eval unzips every
   archive of the repository (``$HF_HOME/<dataset_kwargs.cache_dir>``),

each folder with every extension the benchmark uses (``.mp4``, then ``.MP4``, ``.mkv``).
For a hub id R is ``$HF_HOME`` itself: spec and lmms-eval coincide, the repo layout
means nothing there, and only ``$HF_HOME/videomme/data`` is tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

MISSING_VIDEO = "missing video"  # how a missing-video error starts (pipeline.evaluate counts them)


@dataclass(frozen=True)
class MediaLayout:
    """Where one kind of media file of a benchmark sits.

    cache_dir:  the benchmark's folder under a root: lmms-eval's ``dataset_kwargs.cache_dir``
                (``"videomme"``), the folder of ``$HF_HOME`` it unzips the repo's archives into,
                and the spec's folder under a local copy.
    folder:     the folder the repo's archives unpack to (``"data"``, ``"subtitle"``; ``""``
                when they hold bare files, as EgoPlan's do).
    extensions: tried in this order.
    """

    cache_dir: str
    folder: str
    extensions: tuple[str, ...]

    def folders(self, root: str, hf_home: str) -> list[str]:
        """The folders to look in, in order, without repeats (module docstring):
        ``root/cache_dir/folder`` (spec), ``root/folder`` (repo download; not when root is
        ``hf_home``), ``hf_home/cache_dir/folder`` (lmms-eval)."""
        spec = os.path.join(root, self.cache_dir, self.folder)
        repo = os.path.join(root, self.folder)
        lmms_eval = os.path.join(hf_home, self.cache_dir, self.folder)
        same_root = os.path.normpath(root) == os.path.normpath(hf_home)
        found = [spec] + ([] if same_root else [repo]) + [lmms_eval]
        return list(dict.fromkeys(os.path.normpath(f) for f in found))

    def find(self, root: str, hf_home: str, name: str, what: str = "video") -> tuple[str, Optional[str]]:
        """``(path, error)`` of ``name`` (a file name without extension) in this layout:
        see :func:`find_media`."""
        return find_media(self.folders(root, hf_home), name, self.extensions, what)


def find_media(folders: Sequence[str], name: str, extensions: Sequence[str],
               what: str = "video") -> tuple[str, Optional[str]]:
    """``(path, None)`` for the first ``folder/name + ext`` that is a file, folders first,
    then extensions; else ``(the first candidate, "missing <what>: tried ...")``, the
    tried paths written once per folder with the extensions in braces:

    >>> find_media(["/d/videomme/data", "/d/data"], "x", (".mp4", ".mkv"))[1]
    'missing video: tried /d/videomme/data/x.{mp4,mkv}, /d/data/x.{mp4,mkv}'
    """
    for folder in folders:
        for ext in extensions:
            path = os.path.join(folder, name + ext)
            if os.path.isfile(path):
                return path, None
    tried = ", ".join(os.path.join(folder, name) + _extensions(extensions) for folder in folders)
    return os.path.join(folders[0], name + extensions[0]), f"missing {what}: tried {tried}"


def _extensions(extensions: Sequence[str]) -> str:
    """``(".mp4",)`` -> ``".mp4"``; ``(".mp4", ".MP4")`` -> ``".{mp4,MP4}"`` (shell braces)."""
    if len(extensions) == 1:
        return extensions[0]
    return ".{" + ",".join(ext.lstrip(".") for ext in extensions) + "}"
