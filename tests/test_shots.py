"""Shot boundaries: exact on synthetic cuts, PySceneDetect's reference cuts on real videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth import make_video
from vidpipe.config import ShotsConfig
from vidpipe.pipeline.shots import ShotDetector, mean_pixel_distance
from vidpipe.video import probe, decode


def cut_times(path: Path, detector: str = "adaptive") -> tuple[list[float], float]:
    info = probe(path)
    shots = ShotDetector(ShotsConfig(detector=detector), info.fps)
    cuts: list[float] = []
    for frame in decode(info, sample_fps=0):
        cuts += shots.push(frame)
    return cuts + shots.finish(), info.fps


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_synthetic_hard_cuts_found_at_their_frame(tmp_path, detector):
    video = make_video(tmp_path / "cuts.mp4", [2.0, 0.6, 3.0, 1.4])
    cuts, _ = cut_times(video, detector)
    assert cuts == pytest.approx([2.0, 2.6, 5.6], abs=1e-6)


def test_frame_distance_is_pyscenedetects_number(tmp_path):
    """The OpenCV frame distance the detectors use gives PySceneDetect's own number (its
    NumPy formula, scenedetect 0.7.2) exactly, on real HSV planes and at the extremes."""
    import cv2
    import numpy as np
    from scenedetect.detectors import content_detector

    def upstream(left, right):
        return np.sum(np.abs(left.astype(np.int32) - right.astype(np.int32))) / float(left.shape[0] * left.shape[1])

    assert content_detector._mean_pixel_distance is mean_pixel_distance
    video = make_video(tmp_path / "cuts.mp4", [0.5, 0.5])
    planes = [cv2.split(cv2.cvtColor(f.small, cv2.COLOR_BGR2HSV)) for f in decode(probe(video), sample_fps=0)]
    pairs = [(a[c], b[c]) for a, b in zip(planes, planes[1:]) for c in range(3)]
    rng = np.random.default_rng(0)
    pairs += [tuple(rng.integers(0, 256, (2, 144, 256), dtype=np.uint8)),
              (np.zeros((2160, 3840), np.uint8), np.full((2160, 3840), 255, np.uint8))]
    assert any(upstream(a, b) > 0 for a, b in pairs[:-2])
    for a, b in pairs:
        assert mean_pixel_distance(a, b) == upstream(a, b)


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown shot detector"):
        ShotDetector(ShotsConfig(detector="magic"), 25.0)


def test_testvideo_cuts_match_pyscenedetect_reference(shared):
    video = shared / "media/videos/pyscenedetect/testvideo.mp4"
    golden = json.loads((shared / "media/shot_gt/pyscenedetect/goldens/testvideo.mp4.AdaptiveDetector.default.json").read_text())
    cuts, fps = cut_times(video)
    frames = [round(c * fps) for c in cuts]
    assert frames == golden["cuts"] == [30, 180, 394, 691]


@pytest.mark.parametrize("name", ["issue-134-rotate.mp4", "goldeneye-vfr-drop3.mp4"])
@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_rotated_and_variable_frame_rate_cut_at_the_same_seconds(shared, name, detector):
    cuts, _ = cut_times(shared / "media/videos/pyscenedetect" / name, detector)
    assert cuts == pytest.approx([3.75, 8.76], abs=0.01)


def test_rotated_cuts_near_frames_90_and_210(shared):
    cuts, fps = cut_times(shared / "media/videos/pyscenedetect/issue-134-rotate.mp4")
    assert [round(c * fps) for c in cuts] == [90, 210]
