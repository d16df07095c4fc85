"""Probing and decoding: sizes, rotation, timestamps, sampling, bad files."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from synth import make_audio_only, make_video
from vidpipe.video import VideoError, content_id, decode, probe


def test_probe_reports_what_the_file_holds(tmp_path):
    info = probe(make_video(tmp_path / "v.mp4", [1.0, 1.0], fps=25, size=(320, 180), audio=True))
    assert (info.width, info.height, info.rotation, info.codec) == (320, 180, 0, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.has_audio
    assert not probe(make_video(tmp_path / "silent.mp4", [1.0])).has_audio


def test_decode_times_and_sampling(tmp_path):
    info = probe(make_video(tmp_path / "v.mp4", [3.0], fps=25))
    frames = list(decode(info, sample_fps=4, max_side=160))
    assert len(frames) == 75
    assert [f.time_s for f in frames[:3]] == pytest.approx([0.0, 0.04, 0.08])
    sampled = [f for f in frames if f.image is not None]
    # The first frame at or after each 1/4 s grid point.
    assert [round(f.time_s, 2) for f in sampled] == [0.0, 0.28, 0.52, 0.76, 1.0, 1.28, 1.52, 1.76, 2.0, 2.28, 2.52, 2.76]
    assert sampled[0].image.shape == (90, 160, 3)  # longest side 160, aspect kept
    assert sampled[0].scale == pytest.approx(2.0)
    assert frames[0].small.shape == (144, 256, 3)  # PySceneDetect's ~256 px analysis size


def test_small_images_are_never_enlarged(tmp_path):
    info = probe(make_video(tmp_path / "v.mp4", [1.0], size=(320, 180)))
    frame = next(f for f in decode(info, max_side=640) if f.image is not None)
    assert frame.image.shape == (180, 320, 3) and frame.scale == 1.0


def test_content_id_follows_bytes_not_names(tmp_path):
    a = make_video(tmp_path / "a.mp4", [1.0])
    b = tmp_path / "renamed.mp4"
    shutil.copy(a, b)
    assert content_id(a) == content_id(b)
    assert content_id(a) != content_id(make_video(tmp_path / "c.mp4", [1.5]))


def empty_file(d):
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def text_file(d):
    (d / "text.mp4").write_text("hello, not a video\n" * 50)
    return d / "text.mp4"


def truncated_header(d):
    data = make_video(d / "whole.mp4", [2.0]).read_bytes()
    (d / "cut.mp4").write_bytes(data[:400])
    return d / "cut.mp4"


@pytest.mark.parametrize(
    "make, message",
    [
        (empty_file, "empty file"),
        (text_file, "not a readable video"),
        (truncated_header, "not a readable video"),
        (lambda d: make_audio_only(d / "sound.mp4"), "audio-only"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, make, message):
    with pytest.raises(VideoError) as err:
        info = probe(make(tmp_path))
        list(decode(info))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_rotated_video_is_decoded_upright_like_ffmpeg(shared, tmp_path):
    """FFmpeg's own autorotate is the reference for 'as displayed'."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg binary not installed")
    path = shared / "media/videos/pyscenedetect/issue-134-rotate.mp4"
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, 544, 1280)
    frame = next(f for f in decode(info, sample_fps=1, max_side=256) if f.time_s >= 1.0 and f.image is not None)
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-ss", f"{frame.time_s:.3f}", "-i", str(path), "-frames:v", "1",
         "-vf", f"scale={frame.image.shape[1]}:{frame.image.shape[0]}", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        check=True, capture_output=True,
    ).stdout
    reference = np.frombuffer(raw, np.uint8).reshape(frame.image.shape).astype(float)
    upright = np.abs(frame.image.astype(float) - reference).mean()
    upside_down = np.abs(frame.image[::-1, ::-1].astype(float) - reference).mean()
    assert upright < 8 < upside_down


def test_variable_frame_rate_times_come_from_timestamps(shared):
    info = probe(shared / "media/videos/pyscenedetect/goldeneye-vfr-drop3.mp4")
    times = np.array([f.time_s for f in decode(info, sample_fps=0)])
    gaps = np.diff(times)
    assert gaps.max() > 1.5 * gaps.min()  # frames were dropped: uneven spacing
    assert times[-1] == pytest.approx(info.duration_s, abs=0.1)
