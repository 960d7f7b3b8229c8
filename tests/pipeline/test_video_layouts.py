"""Video benchmarks find their files in every layout a user can have them
(``pipeline/tasks/_media.py``): the spec's local copy, the hub repository downloaded with
its zips unzipped in place, and lmms-eval's ``$HF_HOME/<cache_dir>``. Real mp4/srt/zip
and parquet files, named as in the real repositories."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import evaluate
from pipeline.samples import LAYOUTS, VIDEO_TASKS, video_frames, write_srt, write_task, write_video
from pipeline.samples import main as samples_main
from pipeline.tasks import get_task
from pipeline.tasks._media import MediaLayout, find_media
from pipeline.video import VideoError, read_frames

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


# ---------------------------------------------------------------- sample sets in each layout


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty HF_HOME of the test's own, so no real cache is looked in."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def expected_folder(task, layout: str, root: Path, home: Path) -> str:
    """Where ``layout`` keeps the task's videos: the rule of _media.py, written out again."""
    media = task.videos
    where = {"spec": root / media.cache_dir / media.folder, "repo": root / media.folder,
             "lmms-eval": home / media.cache_dir / media.folder}[layout]
    return os.path.normpath(where)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", VIDEO_TASKS)
def test_sample_sets_in_every_layout_find_every_present_video(tmp_path, monkeypatch, hf_home, name, layout):
    data = write_task(name, tmp_path / "sets", 2, frames_per_video=8, corrupt=True, layout=layout)
    root = tmp_path / "sets" / name
    if layout == "lmms-eval":  # the set is an HF_HOME: the hub cache's snapshot and the unzipped files
        monkeypatch.setenv("HF_HOME", str(root))
        assert data.parent.name == "snapshots" and (data.parent.parent / "refs/main").read_text() == data.name
    home = Path(os.environ["HF_HOME"])
    task = get_task(name)
    samples = evaluate.read_samples(name, str(data))

    assert len(samples) == 4 and len({s.id for s in samples}) == 4  # every row once
    folder = expected_folder(task, layout, root, home)
    good, corrupt, missing = samples[:2], samples[2], samples[3]
    assert [s.error for s in good] == [None, None]
    assert [os.path.dirname(s.video) for s in samples[:3]] == [folder] * 3
    assert read_frames(good[1].video, 4).shape == (4, 64, 96, 3)  # .MP4 / .mkv on row 1
    if name == "videomme_subtitles":  # subtitles found in the same layout, placed at the sampled frames
        assert "It moves to the" in good[0].prompt and "No subtitles available" not in good[0].prompt
        assert "cannot open video" in corrupt.error  # it reads the video's length in sample() already
    else:
        assert corrupt.error is None
        with pytest.raises(VideoError, match="cannot open video"):
            read_frames(corrupt.video, 4)
    stem = os.path.basename(missing.video).rsplit(".", 1)[0]
    media = task.videos
    braces = ".{" + ",".join(e[1:] for e in media.extensions) + "}"
    tried = [data / media.cache_dir / media.folder, data / media.folder, home / media.cache_dir / media.folder]
    assert missing.error == "missing video: tried " + ", ".join(
        f"{os.path.normpath(f)}/{stem}{braces}" for f in dict.fromkeys(tried))


def test_media_root_names_where_the_videos_are(tmp_path, hf_home, caplog):
    """Rows in one place (the spec's data.parquet), videos in a repo download elsewhere."""
    videos = write_task("egoschema", tmp_path / "repo", 2, frames_per_video=8, layout="repo")
    rows = write_task("egoschema", tmp_path / "rows", 2, frames_per_video=8)
    for path in (rows / "egoschema").rglob("*.*"):
        path.unlink()  # the rows' own copy of the videos is gone
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate"):
        lost = evaluate.read_samples("egoschema", str(rows))
        found = evaluate.read_samples("egoschema", str(rows), media_root=str(videos))
    assert [bool(s.error) for s in lost] == [True, True]
    assert [s.error for s in found] == [None, None]
    assert [os.path.dirname(s.video) for s in found] == [str(videos / "videos")] * 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.evaluate"]
    assert len(warnings) == 1  # once for the lost read, none for the found one
    assert warnings[0].startswith("egoschema: 2 of 2 video rows have no video file (row ")
    assert f"missing video: tried {rows}/egoschema/videos/" in warnings[0] and "--media-root DIR" in warnings[0]


def test_no_warning_when_only_some_videos_are_missing(tmp_path, hf_home, caplog):
    data = write_task("nextqa", tmp_path, 2, frames_per_video=8, corrupt=True, layout="repo")
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate"):
        samples = evaluate.read_samples("nextqa", str(data))
    assert sum(bool(s.error) for s in samples) == 1
    assert not [r for r in caplog.records if r.name == "pipeline.evaluate"]


def test_samples_layout_is_for_the_video_tasks(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        samples_main(["--out", str(tmp_path), "--layout", "repo", "--tasks", "pope"])
    assert exit_info.value.code == 2 and "--layout repo is for the video tasks only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only the video tasks"):
        write_task("mme", tmp_path, 1, layout="lmms-eval")


# ---------------------------------------------------------------- repositories as downloaded


def _clip(tmp_path: Path, suffix: str, broken: bool = False) -> bytes:
    """The bytes of a real 8-frame video (cut in half when ``broken``)."""
    path = write_video(tmp_path / f"clip{suffix}", video_frames("blue", "left", 8))
    data = path.read_bytes()
    return data[: len(data) // 2] if broken else data


def _download(root: Path, parquet: dict, archives: dict) -> Path:
    """A dataset repository as ``huggingface-cli download --local-dir root`` leaves it, with
    each zip then unzipped in place (``cd root && unzip X.zip``). ``parquet``: path ->
    columns; ``archives``: zip name -> {entry: bytes}."""
    for path, columns in parquet.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), root / path)
    for name, entries in archives.items():
        with zipfile.ZipFile(root / name, "w") as archive:
            for entry, data in entries.items():
                archive.writestr(entry, data)
        with zipfile.ZipFile(root / name) as archive:
            archive.extractall(root)
    (root / "README.md").write_text("---\nconfigs: ...\n---\n")
    return root


def _videomme(tmp_path: Path) -> tuple[Path, list]:
    ids = ["fFjv93ACGo8", "Vp4vW5ZUoN4", "cDDkTWAk3nM", "ycNRRUu3H3E"]  # ok (.mp4), ok (.mkv), cut, not in a zip
    n = len(ids)
    rows = {"video_id": [f"{i + 1:03d}" for i in range(n)], "duration": ["short"] * n, "domain": ["Knowledge"] * n,
            "sub_category": ["Humanity & History"] * n, "url": [f"https://www.youtube.com/watch?v={v}" for v in ids],
            "videoID": ids, "question_id": [f"{i + 1:03d}-1" for i in range(n)], "task_type": ["Counting Problem"] * n,
            "question": ["How many candles are there?"] * n, "options": [["A. 1.", "B. 2.", "C. 3.", "D. 4."]] * n,
            "answer": ["C"] * n}
    srt = (tmp_path / "srt")
    write_srt(srt, [(0.0, 0.5, "Here are the candles."), (0.5, 1.0, "There are three.")])
    root = _download(tmp_path / "Video-MME", {"videomme/test-00000-of-00001.parquet": rows}, {
        "videos_chunked_01.zip": {f"data/{ids[0]}.mp4": _clip(tmp_path, ".mp4"),
                                  f"data/{ids[1]}.mkv": _clip(tmp_path, ".mkv")},
        "videos_chunked_02.zip": {f"data/{ids[2]}.mp4": _clip(tmp_path, ".mp4", broken=True)},
        "subtitle.zip": {f"subtitle/{v}.srt": srt.read_bytes() for v in ids[:3]},
    })
    return root, [root / f"data/{ids[0]}.mp4", root / f"data/{ids[1]}.mkv", root / f"data/{ids[2]}.mp4"]


def _egoschema(tmp_path: Path) -> tuple[Path, list]:
    ids = ["001934bb-81bd-4cd8-a574-0472ef3f6678", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e",
           "00f93e1e-cf4e-4835-88b4-4ad68216e86f", "01b6dd3c-1cba-4dd5-9a1f-1d8e4e8e2a28"]
    n = len(ids)
    options = [["A. cooking", "B. cleaning", "C. reading", "D. sleeping", "E. running"]] * n
    subset = {"question_idx": [f"{v}_0" for v in ids], "question": ["What is C doing?"] * n, "video_idx": ids,
              "option": options, "answer": ["1"] * n}
    full = {"question_idx": ["ffff_0"], "question": ["?"], "video_idx": ["ffff"], "option": options[:1],
            "answer": [None]}  # the full config, no answers: must not be read
    root = _download(tmp_path / "egoschema", {"Subset/test-00000-of-00001.parquet": subset,
                                              "MC/test-00000-of-00001.parquet": full}, {
        "videos_chunked_01.zip": {f"videos/{ids[0]}.mp4": _clip(tmp_path, ".mp4"),
                                  f"videos/{ids[1]}.MP4": _clip(tmp_path, ".MP4")},
        "videos_chunked_02.zip": {f"videos/{ids[2]}.mp4": _clip(tmp_path, ".mp4", broken=True)},
    })
    return root, [root / f"videos/{ids[0]}.mp4", root / f"videos/{ids[1]}.MP4", root / f"videos/{ids[2]}.mp4"]


def _nextqa(tmp_path: Path) -> tuple[Path, list]:
    ids = [4010069381, 4882821564, 5333075105, 6233408665]
    n = len(ids)
    mc = {"video": ids, "frame_count": [8] * n, "width": [96] * n, "height": [64] * n,
          "question": ["why did the boy pick up the ball"] * n, "answer": [2] * n, "qid": list(range(n)),
          "type": ["CW"] * n, **{f"a{i}": [f"option {i}"] * n for i in range(5)}}
    oe = {"video": [ids[0]], "question": ["what is the boy holding"], "answer": ["ball"], "qid": [0], "type": ["DO"],
          "additional_ref_answer": [None]}
    root = _download(tmp_path / "NExTQA", {"MC/test-00000-of-00001.parquet": mc,
                                           "OE/test-00000-of-00001.parquet": oe}, {
        "videos.zip": {f"NExTVideo/{ids[0]}.mp4": _clip(tmp_path, ".mp4"),
                       f"NExTVideo/{ids[1]}.mp4": _clip(tmp_path, ".mp4"),
                       f"NExTVideo/{ids[2]}.mp4": _clip(tmp_path, ".mp4", broken=True)},
    })
    return root, [root / f"NExTVideo/{v}.mp4" for v in ids[:3]]


def _egoplan(tmp_path: Path) -> tuple[Path, list]:
    ids = [1254, 1255, 2087, 3301]
    n = len(ids)
    rows = {"sample_id": ids, "video_id": ["P01_11"] * n, "task_goal": ["make a cup of tea"] * n,
            "question": ["What should I do next?"] * n, "choice_a": ["boil water"] * n, "choice_b": ["open fridge"] * n,
            "choice_c": ["pour tea"] * n, "choice_d": ["wash cup"] * n, "golden_choice_idx": ["A"] * n}
    root = _download(tmp_path / "EgoPlan", {"egoplan/validation-00000-of-00001.parquet": rows}, {
        "videos_chunked_01.zip": {f"{ids[0]}.mp4": _clip(tmp_path, ".mp4"), f"{ids[1]}.mkv": _clip(tmp_path, ".mkv")},
        "videos_chunked_02.zip": {f"{ids[2]}.mp4": _clip(tmp_path, ".mp4", broken=True)},
    })
    return root, [root / f"{ids[0]}.mp4", root / f"{ids[1]}.mkv", root / f"{ids[2]}.mp4"]


REPOSITORIES = {"videomme": _videomme, "videomme_subtitles": _videomme, "egoschema": _egoschema,
                "nextqa": _nextqa, "egoplan": _egoplan}


@pytest.mark.parametrize("name", sorted(REPOSITORIES))
def test_a_repository_download_with_its_zips_unzipped_in_place(tmp_path, hf_home, caplog, name):
    """``--data DIR`` for the repository as downloaded: its own parquet paths, the videos
    where its zips put them. Three videos present (one cut in half), one in no zip."""
    root, present = REPOSITORIES[name](tmp_path)
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate"):
        samples = evaluate.read_samples(name, str(root))
    assert len(samples) == 4  # the Subset / MC rows only, not another config's
    assert [s.video for s in samples[:3]] == [str(p) for p in present]
    assert [s.error for s in samples[:2]] == [None, None]
    assert samples[3].error.startswith("missing video: tried ") and str(root) in samples[3].error
    if name == "videomme_subtitles":
        assert samples[0].prompt.startswith("This video's subtitles are listed below: \nHere are the candles.\n")
        assert "cannot open video" in samples[2].error
    else:
        assert samples[2].error is None
        with pytest.raises(VideoError, match="cannot open video"):
            read_frames(samples[2].video, 4)
    assert not [r for r in caplog.records if r.name == "pipeline.evaluate"]  # a quarter missing: no doubt
