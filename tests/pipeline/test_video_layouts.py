"""Video benchmarks find their files in every layout a user can have them
(``pipeline/tasks/_media.py``): the spec's local copy, the hub repository downloaded with
its zips unzipped in place, and lmms-eval's ``$HF_HOME/<cache_dir>``. Real mp4/srt/zip
and parquet files, named as in the real repositories."""

from __future__ import annotations

import pytest

from pipeline.tasks._media import MediaLayout, find_media

VIDEOMME = MediaLayout("videomme", "data", (".mp4", ".MP4", ".mkv"))
EGOPLAN = MediaLayout("egoplan", "", (".mp4", ".MP4", ".mkv"))


# ---------------------------------------------------------------- the resolver


def test_folders_are_spec_then_repo_then_lmms_eval_without_repeats():
    assert VIDEOMME.folders("/d", "/hf") == ["/d/videomme/data", "/d/data", "/hf/videomme/data"]
    assert EGOPLAN.folders("/d/", "/hf") == ["/d/egoplan", "/d", "/hf/egoplan"]  # bare files in EgoPlan's zips
    # a hub id: the root is HF_HOME, where spec and lmms-eval coincide and "repo" means nothing
    assert VIDEOMME.folders("/hf", "/hf/") == ["/hf/videomme/data"]
    # lmms-eval's own folder given as the data: it is a repo download, the same as lmms-eval's candidate
    assert VIDEOMME.folders("/hf/videomme", "/hf") == ["/hf/videomme/videomme/data", "/hf/videomme/data"]


def test_find_media_takes_folders_in_order_then_extensions(tmp_path):
    spec, repo, cache = (tmp_path / "d/videomme/data", tmp_path / "d/data", tmp_path / "hf/videomme/data")
    for folder in (repo, cache):
        folder.mkdir(parents=True)
    (repo / "x.MP4").write_bytes(b"v")
    (cache / "x.mp4").write_bytes(b"v")
    folders = [str(spec), str(repo), str(cache)]
    assert find_media(folders, "x", VIDEOMME.extensions) == (str(repo / "x.MP4"), None)  # nearer folder wins
    (repo / "x.mp4").write_bytes(b"v")
    assert find_media(folders, "x", VIDEOMME.extensions) == (str(repo / "x.mp4"), None)  # .mp4 before .MP4
    (repo / "y.mkv").mkdir()  # a folder is no video
    path, error = find_media(folders, "y", VIDEOMME.extensions)
    assert path == str(spec / "y.mp4")
    assert error == (f"missing video: tried {spec}/y.{{mp4,MP4,mkv}}, {repo}/y.{{mp4,MP4,mkv}}, "
                     f"{cache}/y.{{mp4,MP4,mkv}}")
    assert find_media([str(spec)], "s", (".srt",), "subtitles")[1] == f"missing subtitles: tried {spec}/s.srt"
