"""The generated demo video matches its truth file: streams, duration, and cuts that
PySceneDetect finds where demo_truth.json says they are (the README's first command relies on it)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "make_demo_video.py"


def _make(out: Path) -> Path:
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` not on PATH; the demo video needs it")
    pytest.importorskip("skimage", reason="scikit-image (demo photos) not installed")
    res = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "demo.mp4")
    return out / "demo.mp4"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    video = _make(tmp_path_factory.mktemp("demo"))
    return video, json.loads((video.parent / "demo_truth.json").read_text())


def test_streams_and_duration(demo):
    import av

    video, truth = demo
    with av.open(str(video)) as c:
        assert abs(c.duration / 1e6 - truth["duration_s"]) < 0.1
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.format.name == "yuv420p"
        assert (v.width, v.height, v.average_rate) == (640, 360, 25)
        assert a.codec_context.name == "aac"
        assert sum(1 for _ in c.decode(video=0)) == truth["frames"]
    assert 15 <= truth["duration_s"] <= 25


def test_truth_exercises_clip_rules(demo):
    _, truth = demo
    shots = truth["shots"]
    assert len(truth["cuts_s"]) >= 4
    assert any(s["duration_s"] < 1 for s in shots)
    assert sum(s["face"] and 2 <= s["duration_s"] <= 6 for s in shots) >= 2
    assert any(not s["face"] and s["duration_s"] >= 1 for s in shots)


def test_scenedetect_finds_cuts(demo):
    from scenedetect import AdaptiveDetector, detect

    video, truth = demo
    found = [start.frame_num for start, _ in detect(str(video), AdaptiveDetector())[1:]]
    assert len(found) == len(truth["cut_frames"]), (found, truth["cut_frames"])
    for got, want in zip(found, truth["cut_frames"]):
        assert abs(got - want) <= 1, (found, truth["cut_frames"])


def test_deterministic(demo, tmp_path):
    video, _ = demo
    again = _make(tmp_path)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(again) == digest(video)
    assert (again.parent / "demo_truth.json").read_text() == (video.parent / "demo_truth.json").read_text()
