"""Reading audio and fixed-rate pictures on the presentation timeline: AudioReader (16 kHz
mono int16, clip by clip) and video.decode_range (the picture on screen at each time)."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

from synth import make_video
from vidpipe.audio import SAMPLE_RATE, AudioError, AudioReader, load_audio, resample
from vidpipe.video import decode_range, probe


def grey_ramp_video(path, n_frames: int, fps: int, audio_start_s: float | None = None):
    """Frame i is flat grey 20 + 5 (i mod 40); with `audio_start_s`, a track of 1 kHz clicks every
    0.5 s that starts that long after the video (so the two streams' starts differ)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = {"preset": "ultrafast", "qp": "0"}
        astream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE) if audio_start_s is not None else None
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 + 5 * (i % 40), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if astream is not None:
            x = np.zeros(int(n_frames / fps * SAMPLE_RATE), np.int16)
            for start in range(0, len(x), SAMPLE_RATE // 2):  # a 10 ms click every 0.5 s
                x[start : start + 160] = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / SAMPLE_RATE)).astype(np.int16)
            offset = round(audio_start_s * SAMPLE_RATE)
            for s in range(0, len(x), 1024):
                af = av.AudioFrame.from_ndarray(x[s : s + 1024].reshape(1, -1), format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, offset + s, Fraction(1, SAMPLE_RATE)
                out.mux(astream.encode(af))
            out.mux(astream.encode(None))
    return path


def test_decode_range_gives_the_picture_on_screen_at_each_time(tmp_path):
    info = probe(grey_ramp_video(tmp_path / "ramp.mkv", 40, fps=10))
    got = list(decode_range(info, 1.0, 2.0, fps=25, gray=True))
    times = np.array([t for t, _ in got])
    assert times == pytest.approx(1.0 + np.arange(25) / 25)
    shown = np.array([(float(img.mean()) - 20) / 5 for _, img in got])
    # At 10 fps, frame i is on screen during [i/10, (i+1)/10).
    assert np.round(shown) == pytest.approx(np.floor(times * 10 + 1e-6))
    assert got[0][1].shape == (48, 64)
    bgr = list(decode_range(info, 3.5, 10.0, fps=4, max_side=32))
    assert len(bgr) == 26 and bgr[0][1].shape == (24, 32, 3)  # the last picture stays on screen
    assert np.round((bgr[-1][1].mean() - 20) / 5) == 39


def test_clip_audio_follows_the_presentation_timeline(tmp_path):
    # Audio starting 0.6 s after the video: clicks every 0.5 s from 0.6 s on.
    path = grey_ramp_video(tmp_path / "late_audio.mkv", 50, fps=10, audio_start_s=0.6)
    assert probe(path).audio_start_s == pytest.approx(0.6, abs=0.01)
    with AudioReader(path) as reader:
        clips = [reader.read(a, b) for a, b in [(0.0, 1.0), (1.0, 2.3), (2.3, 5.0)]]
    assert [len(c) for c in clips] == [16000, 20800, 43200]
    audio = np.concatenate(clips)
    loud = np.flatnonzero(np.abs(audio) > 1000)
    onsets = loud[np.r_[True, np.diff(loud) > 800]] / SAMPLE_RATE
    assert onsets == pytest.approx([0.6, 1.1, 1.6, 2.1, 2.6, 3.1, 3.6, 4.1, 4.6], abs=0.002)
    assert not audio[: int(0.59 * SAMPLE_RATE)].any()  # silence before the stream starts


def test_reading_back_or_far_ahead_seeks_and_gives_the_same_samples(tmp_path):
    path = make_video(tmp_path / "v.mp4", [4.0, 4.0], fps=25, audio=True)
    whole = load_audio(path)
    assert len(whole) == pytest.approx(8 * SAMPLE_RATE, abs=2048)
    with AudioReader(path, seek_gap_s=1.0) as reader:
        for a, b in [(0.5, 1.5), (6.0, 7.0), (2.0, 3.0), (2.5, 4.5)]:  # far ahead, then back twice
            part = reader.read(a, b)
            ref = whole[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)].astype(float)
            # The tone again, to within the resampler's sub-sample phase after a seek.
            assert len(part) == len(ref)
            assert np.corrcoef(part, ref)[0, 1] > 0.99
        assert len(reader._chunks) <= 64  # only what was not read yet is held (a few frames)


def test_no_audio_stream_reads_silence_and_audio_arrays_resample(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", [1.0])
    with AudioReader(silent) as reader:
        assert not reader.has_audio
        assert not reader.read(0.0, 1.0).any() and len(reader.read(0.0, 1.0)) == SAMPLE_RATE
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(silent)
    t = np.arange(44100) / 44100
    tone = resample(0.5 * np.sin(2 * np.pi * 440 * t), 44100)
    assert tone.dtype == np.int16 and len(tone) == pytest.approx(SAMPLE_RATE, abs=64)
    spectrum = np.abs(np.fft.rfft(tone[:SAMPLE_RATE - 64]))
    assert np.argmax(spectrum) / (SAMPLE_RATE - 64) * SAMPLE_RATE == pytest.approx(440, abs=2)


def test_a_clips_audio_is_what_ffmpeg_plays_from_that_time(shared):
    """short_hamilton_clip.mp4's video starts 0.844 s after its audio: a clip's audio is the
    audio heard with its frames (ffmpeg -ss uses the same presentation timeline)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg binary not installed")
    path = shared / "media/videos/short_hamilton_clip.mp4"
    info = probe(path)
    assert info.video_start_s - info.audio_start_s == pytest.approx(0.844, abs=0.01)
    start, end = 3.580083, 7.884387  # the medium shot of the performer
    with AudioReader(path) as reader:
        reader.read(1.511348, 2.846016)  # an earlier clip first, as in a run
        ours = reader.read(start, end).astype(float)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{start:.6f}", "-t", f"{end - start:.6f}", "-i", str(path),
                          "-ac", "1", "-ar", "16000", "-f", "s16le", "-"], capture_output=True, check=True).stdout
    theirs = np.frombuffer(raw, np.int16).astype(float)
    n = min(len(ours), len(theirs))
    lags = np.arange(-800, 801)  # ±50 ms
    corr = [np.dot(ours[4000 + k : n - 4000 + k], theirs[4000 : n - 4000]) for k in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 16  # within 1 ms
    assert np.corrcoef(ours[:n], theirs[:n])[0, 1] > 0.95
