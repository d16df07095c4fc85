"""`vidpipe run` end to end: tables, clip rules, bad files, resume, kill-and-resume, readers."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

import vidpipe
from synth import make_audio_only, make_video
from vidpipe.cli import main
from vidpipe.config import Config

REPO = Path(__file__).resolve().parents[1]


def sorted_tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every table, in a fixed order, without the measured `timings` (wall seconds differ run to run)."""
    keys = {"videos": ["video_id"], "clips": ["clip_id"], "faces": ["clip_id", "rank", "time_s", "det_score"]}
    tables = {t: vidpipe.read_table(out, t).sort_values(k).reset_index(drop=True) for t, k in keys.items()}
    tables["videos"] = tables["videos"].drop(columns=["timings"])
    return tables


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Good videos next to every kind of bad file, nested folders included."""
    d = tmp_path_factory.mktemp("videos")
    (d / "nested" / "deeper").mkdir(parents=True)
    make_video(d / "good.mp4", [2.0, 0.6, 3.0, 1.4], audio=True)
    make_video(d / "nested" / "deeper" / "long.mkv", [1.5, 31.0], size=(160, 90))
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file with a video extension\n" * 20)
    make_audio_only(d / "nested" / "voice.mp4")
    whole = make_video(d / "whole.ts", [2.0, 2.0, 2.0], codec="mpeg4").read_bytes()
    (d / "truncated.ts").write_bytes(whole[: len(whole) // 2])
    (d / "whole.ts").unlink()
    (d / "readme.txt").write_text("not a video extension: ignored\n")
    return d


@pytest.fixture(scope="module")
def mixed_run(mixed_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"  # weights from PyPI: runs without ../shared
    cfg.set("pipeline.stages", "faces")  # about clips and files: synthetic videos have no people
    report = vidpipe.run([mixed_folder], out, cfg)
    return out, report, cfg


def test_good_videos_become_clips_with_reasons(mixed_run):
    out, report, _ = mixed_run
    clips = vidpipe.read_table(out, "clips").sort_values(["video_id", "shot_index"])
    videos = vidpipe.read_table(out, "videos").set_index("path")
    good_id = videos.loc[[p for p in videos.index if p.endswith("good.mp4")][0], "video_id"]
    good = clips[clips.video_id == good_id]
    assert good.start_s.round(2).tolist() == [0.0, 2.0, 2.6, 5.6]
    assert good.end_s.round(2).tolist() == [2.0, 2.6, 5.6, 7.0]
    assert good.status.tolist() == ["ok", "rejected", "ok", "ok"]
    assert good.reason.iloc[1].startswith("too short")
    long_id = videos.loc[[p for p in videos.index if p.endswith("long.mkv")][0], "video_id"]
    long = clips[clips.video_id == long_id]
    assert long.status.tolist() == ["ok", "rejected"]
    assert long.reason.iloc[1].startswith("too long")
    assert all(c.startswith(v) for c, v in zip(clips.clip_id, clips.video_id))


def test_every_bad_file_is_recorded_and_the_run_goes_on(mixed_run):
    out, report, _ = mixed_run
    videos = vidpipe.read_table(out, "videos")
    by_name = {Path(p).name: row for p, row in zip(videos.path, videos.itertuples())}
    assert set(by_name) == {"good.mp4", "long.mkv", "empty.mp4", "notes.mp4", "voice.mp4", "truncated.ts"}
    assert by_name["empty.mp4"].status == "error" and "empty file" in by_name["empty.mp4"].error
    assert by_name["notes.mp4"].status == "error" and "not a readable video" in by_name["notes.mp4"].error
    assert by_name["voice.mp4"].status == "error" and "audio-only" in by_name["voice.mp4"].error
    for name in ("empty.mp4", "notes.mp4", "voice.mp4"):
        assert "\n" not in by_name[name].error
    # A truncated file is processed as far as it decodes, with a warning.
    truncated = by_name["truncated.ts"]
    assert truncated.status == "ok" and truncated.n_clips >= 1
    assert by_name["good.mp4"].status == by_name["long.mkv"].status == "ok"
    assert report.exit_code == 1
    assert {Path(o.path).name for o in report.failed} == {"empty.mp4", "notes.mp4", "voice.mp4"}


def test_second_run_skips_everything_and_changes_nothing(mixed_folder, mixed_run):
    out, _, cfg = mixed_run
    before = sorted_tables(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    report = vidpipe.run([mixed_folder], out, cfg)
    assert report.count("skipped") == 6 and report.count("ok") == 0
    assert report.exit_code == 1  # the bad files are still bad
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == mtimes
    for table, frame in sorted_tables(out).items():
        pd.testing.assert_frame_equal(frame, before[table])


def test_parallel_workers_write_the_same_store(mixed_folder, mixed_run, tmp_path):
    out, _, cfg = mixed_run
    parallel = Config.from_dict(cfg.to_dict() | {"run": {"workers": 2}})
    report = vidpipe.run([mixed_folder], tmp_path / "parallel", parallel)
    assert report.count("ok") == 3 and len(report.failed) == 3
    got, want = sorted_tables(tmp_path / "parallel"), sorted_tables(out)
    for table in want:
        pd.testing.assert_frame_equal(got[table], want[table])


def test_changed_config_redoes_videos(mixed_folder, mixed_run, tmp_path):
    out, _, cfg = mixed_run
    copy = tmp_path / "store"
    shutil.copytree(out, copy)
    cfg2 = Config.from_dict(cfg.to_dict() | {"clips": {"min_duration_s": 0.5}})
    report = vidpipe.run([mixed_folder / "good.mp4"], copy, cfg2)
    assert report.count("ok") == 1
    clips = vidpipe.read_table(copy, "clips")
    assert (clips.status == "ok").sum() == (vidpipe.read_table(out, "clips").status == "ok").sum() + 1


def test_tables_read_with_pandas_pyarrow_and_duckdb(mixed_run):
    duckdb = pytest.importorskip("duckdb")
    out, _, _ = mixed_run
    n = len(pd.read_parquet(out / "clips"))
    assert n == ds.dataset(out / "clips").count_rows() == len(vidpipe.read_table(out, "clips")) > 0
    got = duckdb.sql(f"select count(*) from read_parquet('{out}/clips/*.parquet')").fetchall()[0][0]
    assert got == n
    errors = duckdb.sql(f"select count(*) from read_parquet('{out}/videos/*.parquet') where status = 'error'").fetchall()[0][0]
    assert errors == 3


def test_cli_exit_codes_and_one_line_errors(mixed_folder, tmp_path):
    runner = CliRunner()
    good = runner.invoke(main, ["run", str(mixed_folder / "good.mp4"), "--out", str(tmp_path / "a"), "-q",
                                "--face-backend", "dlib", "--set", "pipeline.stages=faces"])
    assert good.exit_code == 0, good.output
    bad = runner.invoke(main, ["run", str(mixed_folder / "empty.mp4"), str(tmp_path / "missing.mp4"),
                               "--out", str(tmp_path / "b"), "-q", "--face-backend", "dlib"])
    assert bad.exit_code == 1
    assert "empty.mp4: empty file (0 bytes)" in bad.output
    assert "missing.mp4: no such file or directory" in bad.output
    assert "Traceback" not in bad.output


def test_cli_missing_weights_is_one_line(tmp_path, mixed_folder, monkeypatch):
    monkeypatch.delenv("VIDPIPE_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDPIPE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["run", str(mixed_folder / "good.mp4"), "--out", str(tmp_path / "o"),
                                       "--face-backend", "scrfd", "--weights", str(tmp_path / "empty")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1 and "scrfd_500m" in lines[0] and "Traceback" not in result.output


def test_config_file_and_flags(tmp_path, mixed_folder):
    (tmp_path / "cfg.toml").write_text('[clips]\nmin_duration_s = 0.5\n[pipeline]\nstages = ["faces"]\n'
                                       '[faces]\ndetector = "dlib"\nembedder = "dlib"\n')
    result = CliRunner().invoke(main, ["run", str(mixed_folder / "good.mp4"), "--out", str(tmp_path / "o"), "-q",
                                       "--config", str(tmp_path / "cfg.toml"), "--max-clip", "2.5"])
    assert result.exit_code == 0, result.output
    clips = vidpipe.read_table(tmp_path / "o", "clips").sort_values("shot_index")
    assert clips.status.tolist() == ["ok", "ok", "rejected", "ok"]  # 0.6 s kept, 3.0 s too long
    (tmp_path / "bad.toml").write_text("[clips]\nminimum = 3\n")
    bad = CliRunner().invoke(main, ["run", str(mixed_folder), "--out", str(tmp_path / "o2"), "--config", str(tmp_path / "bad.toml")])
    assert bad.exit_code == 2 and "unknown config key clips.minimum" in bad.output


# ---------------------------------------------------------------- real media


@pytest.fixture(scope="module")
def hamilton_store(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("hamilton")
    cfg = Config()
    cfg.run.weights_dir = str(shared / "weights")
    cfg.faces.detector, cfg.faces.embedder = "scrfd", "arcface"
    cfg.set("pipeline.stages", "faces")  # every face ranked (tests/test_major_character.py: with the rule)
    report = vidpipe.run(shared / "media/videos/short_hamilton_clip.mp4", out, cfg)
    assert report.exit_code == 0
    return out, cfg


def _photo_embedding(path: Path, cfg: Config) -> np.ndarray:
    from vidpipe.pipeline.runner import config_backends

    backends = config_backends(cfg)
    image = cv2.imread(str(path))
    det = backends.get("face_detector").detect([image])
    raw = backends.get("face_embedder").embed([image], det[int(np.argmax(det.confidence))])[0]
    return raw / np.linalg.norm(raw)


def test_hamilton_faces_match_lin_manuel_miranda_best(hamilton_store, shared):
    out, cfg = hamilton_store
    faces = vidpipe.read_table(out, "faces")
    clips = vidpipe.read_table(out, "clips")
    assert len(faces) >= 20 and set(faces.clip_id) <= set(clips[clips.status == "ok"].clip_id)
    top = np.stack(faces[faces.selected].embedding.to_numpy())
    assert np.allclose(np.linalg.norm(top, axis=1), 1.0, atol=1e-4)
    photos = shared / "media/faces/face_recognition_misc"
    scores = {p.stem: float(np.max(top @ _photo_embedding(p, cfg))) for p in sorted(photos.iterdir())}
    best = max(scores, key=scores.get)
    assert best == "lin-manuel-miranda", scores
    assert scores["lin-manuel-miranda"] > max(v for k, v in scores.items() if k != best) + 0.1


def test_faces_are_ranked_by_quality_with_top_32(hamilton_store):
    out, cfg = hamilton_store
    faces = vidpipe.read_table(out, "faces")
    for _, clip in faces.groupby("clip_id"):
        clip = clip.sort_values("rank")
        assert clip["rank"].tolist() == list(range(len(clip)))
        assert (np.diff(clip.quality.to_numpy()) <= 0).all()
        assert clip.selected.tolist() == [r < 32 for r in clip["rank"]]
        boxes = np.stack(clip.bbox.to_numpy())
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes.max() <= 640 + 1 and boxes.min() >= -20  # source pixels of a 640x360 video


def test_manifest_names_config_and_weights(hamilton_store, shared):
    import json

    out, _ = hamilton_store
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vidpipe_version"] == vidpipe.__version__
    assert manifest["config"]["clips"]["max_duration_s"] == 30.0
    backends = manifest["stages"]["backends"]
    assert backends["face_detector"]["name"] == "scrfd" and backends["face_embedder"]["name"] == "arcface"
    files = {Path(w["file"]).name: w for b in backends.values() for w in b["weights"]}
    assert files["scrfd_500m.onnx"]["sha256"] == "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a"
    assert "non-commercial" in files["scrfd_500m.onnx"]["licence"]
    assert "mobilefacenet_128d.onnx" in files
    assert manifest["stages"]["order"] == ["faces"]


def test_killed_runs_resume_to_exactly_a_clean_run(shared, tmp_path):
    """SIGKILL at random moments, start again each time: the final store equals a clean run's."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ["short_hamilton_clip.mp4", "pyscenedetect/goldeneye-vfr-drop3.mp4", "pyscenedetect/issue-134-rotate.mp4"]:
        os.symlink(shared / "media/videos" / name, videos / Path(name).name)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "vidpipe", "run", str(videos), "--weights", str(shared / "weights"),
           "--face-backend", "scrfd", "--set", "pipeline.stages=faces", "-q"]
    clean = tmp_path / "clean"
    subprocess.run(cmd + ["--out", str(clean)], env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(cmd + ["--out", str(killed)], env=env, check=True, capture_output=True)

    assert not [p for p in killed.rglob(".*") if p.is_file()]  # no temporaries left behind
    got, want = sorted_tables(killed), sorted_tables(clean)
    assert got["clips"].clip_id.is_unique
    for table in want:
        pd.testing.assert_frame_equal(got[table], want[table])


@pytest.mark.parametrize("command", ["run", "config", "backends", "weights", "train", "predict", "eval"])
def test_every_job_is_a_subcommand_with_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Usage: main " + command in result.output.replace("vidpipe", "main")


def test_an_unexpected_failure_is_recorded_for_that_file_only(mixed_folder, tmp_path, monkeypatch):
    from vidpipe.stages.faces import FaceStage

    def broken(self, ctxs):
        raise RuntimeError("model exploded\nsecond line")

    monkeypatch.setattr(FaceStage, "process_batch", broken)
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"
    cfg.set("pipeline.stages", "faces")
    report = vidpipe.run([mixed_folder / "good.mp4", mixed_folder / "empty.mp4"], tmp_path / "o", cfg)
    errors = {Path(o.path).name: o.error for o in report.failed}
    assert errors["good.mp4"] == "unexpected RuntimeError: model exploded (see --log-level debug)"
    assert "empty file" in errors["empty.mp4"]
    videos = vidpipe.read_table(tmp_path / "o", "videos")
    assert set(videos.status) == {"error"} and len(vidpipe.read_table(tmp_path / "o", "clips")) == 0


def test_clip_times_are_on_the_presentation_timeline_ffmpeg_seeks_in(hamilton_store, shared):
    """short_hamilton_clip.mp4's video starts 0.844 s after its audio: `ffmpeg -ss start_s`
    shows exactly the frame vidpipe took as each clip's first (on the old first-frame clock
    every cut was 0.85 s early)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    from vidpipe.video import decode, probe

    out, _ = hamilton_store
    path = shared / "media/videos/short_hamilton_clip.mp4"
    videos = vidpipe.read_table(out, "videos")
    assert videos.start_time_s[0] == pytest.approx(0.008005, abs=1e-6)
    assert videos.video_start_s[0] == pytest.approx(0.844014, abs=1e-6) and videos.audio_start_s[0] == 0.0
    clips = vidpipe.read_table(out, "clips").sort_values("start_s")
    assert clips.start_s.iloc[0] == pytest.approx(videos.video_start_s[0])
    wanted = {round(s, 6) for s in clips.start_s}
    ours = {round(f.time_s, 6): f.image for f in decode(probe(path), sample_fps=1000) if round(f.time_s, 6) in wanted}
    assert set(ours) == wanted
    for start in clips.start_s:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{start:.6f}", "-i", str(path), "-frames:v", "1",
                              "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
        theirs = np.frombuffer(raw, np.uint8).reshape(360, 640, 3)
        assert np.abs(ours[round(start, 6)].astype(int) - theirs).mean() < 1.0, start


# ---------------------------------------------------------------- inputs a user really has


def test_cover_art_audio_file_is_reported_as_audio(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    song = tmp_path / "song.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=2", "-f", "lavfi", "-i", "color=red:s=64x64:d=1",
                    "-map", "0", "-map", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", "-frames:v", "1",
                    str(song)], check=True)
    report = vidpipe.run(song, tmp_path / "o", Config())
    assert report.failed[0].error == "audio file (its only picture is cover art): nothing to look at"


def test_dangling_symlink_is_reported_and_the_run_goes_on(tmp_path, mixed_folder):
    videos = tmp_path / "videos"
    videos.mkdir()
    os.symlink(tmp_path / "gone.mp4", videos / "gone.mp4")
    os.symlink(mixed_folder / "good.mp4", videos / "good.mp4")
    cfg = Config()
    cfg.set("pipeline.stages", [])  # nothing but shots and clips: this test is about inputs
    report = vidpipe.run(videos, tmp_path / "o", cfg)
    errors = {Path(o.path).name: o.error for o in report.failed}
    assert errors == {"gone.mp4": f"dangling symbolic link to {tmp_path / 'gone.mp4'}"}
    assert report.count("ok") == 1


def test_every_path_of_the_same_bytes_is_recorded(tmp_path, mixed_folder):
    videos = tmp_path / "videos"
    (videos / "copy").mkdir(parents=True)
    shutil.copy(mixed_folder / "good.mp4", videos / "a.mp4")
    shutil.copy(mixed_folder / "good.mp4", videos / "copy" / "b.mp4")
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"
    report = vidpipe.run(videos, tmp_path / "o", cfg)
    assert sorted(o.status for o in report.outcomes) == ["ok", "skipped"]
    paths = vidpipe.read_table(tmp_path / "o", "paths")
    assert sorted(Path(p).name for p in paths.path) == ["a.mp4", "b.mp4"] and paths.video_id.nunique() == 1
    assert len(vidpipe.read_table(tmp_path / "o", "videos")) == 1  # the video itself once


def test_two_runs_on_one_store_never_do_the_same_video_twice(tmp_path, mixed_folder):
    """Two `vidpipe run` processes over the same videos: each video is analysed once (a
    per-video lock; the second process waits, then finds it done)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, seconds in enumerate([[2.0, 1.5], [1.5, 2.5], [3.0], [2.0, 2.0]]):
        make_video(videos / f"v{i}.mp4", seconds)
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "vidpipe", "run", str(videos), "--out", str(out), "--face-backend", "dlib",
           "--log-level", "info"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    summaries = [line for log in logs for line in log.splitlines() if "processed," in line]
    processed = sum(int(s.split(" processed")[0].split()[-1]) for s in summaries)
    assert processed == 4, summaries  # 4 videos, analysed once between the two runs
    assert len(vidpipe.read_table(out, "videos")) == 4


def test_a_resumed_run_sweeps_only_its_own_temporaries(tmp_path):
    """A killed run's per-video temporaries go; another writer's (a `vidpipe tag` writing
    OUT/identities at the same time) and a video another process holds stay."""
    from vidpipe.store import VideoLock, remove_stale_temporaries

    (tmp_path / "clips").mkdir()
    (tmp_path / "identities").mkdir()
    stale = tmp_path / "clips" / ".aaaa.parquet.123.tmp"
    held = tmp_path / "clips" / ".bbbb.parquet.456.tmp"
    other = tmp_path / "identities" / ".tags.parquet.x1y2.tmp"
    for p in (stale, held, other):
        p.write_bytes(b"partial")
    lock = VideoLock(tmp_path, "bbbb")
    assert lock.acquire(wait=False)
    try:
        remove_stale_temporaries(tmp_path)
    finally:
        lock.release()
    assert not stale.exists() and held.exists() and other.exists()


def test_start_up_pauses_the_collector_and_gives_it_back():
    """Imports and model building run with the cyclic collector off (their millions of
    objects made every automatic full collection slower); it is back as it was after,
    also when the block fails, and left off when it was off."""
    import gc

    from vidpipe.util import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a model failed to load")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_run_leaves_the_collector_on(mixed_run):
    import gc

    assert gc.isenabled()


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_runs_on_one_thread_inside_and_as_before_after():
    """OpenBLAS's idle threads spun on the decoder's and the models' cores after each of a
    run's tiny BLAS calls (3.5 % of a 2-core run's CPU): one thread inside, as before after."""
    from threadpoolctl import threadpool_limits

    from vidpipe.util import blas_on_one_thread

    with threadpool_limits(limits=2, user_api="blas"):
        assert _blas_threads() and set(_blas_threads()) == {2}
        with blas_on_one_thread():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {2}


def test_the_run_command_starts_no_blas_threads(tmp_path):
    """`vidpipe run` sets OPENBLAS_NUM_THREADS before NumPy loads (the stages' config sections
    import it), so OpenBLAS starts no threads to spin; a value of the user's own is kept."""
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(
        "import atexit, os\n"
        "def said():\n"
        "    from threadpoolctl import threadpool_info\n"
        "    blas = [lib['num_threads'] for lib in threadpool_info() if lib['user_api'] == 'blas']\n"
        "    print('BLAS', os.environ.get('OPENBLAS_NUM_THREADS'), ','.join(map(str, blas)))\n"
        "atexit.register(said)\n")
    (tmp_path / "in").mkdir()
    here = str(Path(vidpipe.__file__).parents[1])
    for env, expect in (({}, "1"), ({"OPENBLAS_NUM_THREADS": "2"}, "2")):
        environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        environ.update(env, PYTHONPATH=os.pathsep.join([str(plant), here]))
        r = subprocess.run([sys.executable, "-m", "vidpipe", "run", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, env=environ, timeout=120)
        assert r.returncode == 0, r.stderr
        line = next(x for x in r.stdout.splitlines() if x.startswith("BLAS"))
        _, value, blas = line.split(" ")
        assert value == expect and set(blas.split(",")) == {expect}, line  # every OpenBLAS loaded


def test_the_api_runs_blas_on_one_thread_and_gives_it_back(tmp_path):
    """`vidpipe.run` limits the OpenBLAS copies it finds loaded while files are processed
    (seen from `on_result`, called inside the run), and leaves them as they were."""
    from threadpoolctl import threadpool_limits

    make_video(tmp_path / "a.mp4", [1.2])
    cfg = Config()
    cfg.set("pipeline.stages", ["major_character"])
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        vidpipe.run(tmp_path / "a.mp4", tmp_path / "out", cfg, on_result=lambda o: seen.append(set(_blas_threads())))
        assert set(_blas_threads()) == {2}
    assert seen == [{1}]
