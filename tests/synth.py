"""Small real video files made with PyAV (FFmpeg encoders) for tests that need no ../shared."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Distinct full-frame patterns: hard cuts between them are unmistakable.
PALETTE = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40), (40, 220, 220), (220, 40, 220)]


def _frame(shot: int, i: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(shot)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = PALETTE[shot % len(PALETTE)]
    # Texture and a slowly moving bar, so frames inside a shot differ a little.
    img[:: 8 + shot, :, :] //= 2
    x = (i * 3) % width
    img[:, x : x + 6] = 255 - img[:, x : x + 6]
    img ^= rng.integers(0, 6, size=(1, width, 3), dtype=np.uint8)
    return img


def make_video(
    path: Path,
    shot_seconds: list[float],
    fps: int = 25,
    size: tuple[int, int] = (320, 180),
    audio: bool = False,
    codec: str = "libx264",
    keyframe_every: int | None = None,
) -> Path:
    """A video of hard-cut shots of the given durations; returns its path. `keyframe_every`:
    frames between keyframes (the encoder's default otherwise)."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if keyframe_every:
            stream.codec_context.gop_size = keyframe_every
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        astream = out.add_stream("aac", rate=16000) if audio else None
        n = 0
        for shot, seconds in enumerate(shot_seconds):
            for i in range(int(round(seconds * fps))):
                frame = av.VideoFrame.from_ndarray(_frame(shot, i, width, height), format="rgb24")
                frame.pts = n
                frame.time_base = Fraction(1, fps)
                out.mux(stream.encode(frame))
                n += 1
        out.mux(stream.encode(None))
        if astream is not None:
            _write_tone(out, astream, n / fps)
    return path


def _write_tone(out, stream, seconds: float) -> None:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples), frame_size):
        chunk = samples[start : start + frame_size]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_audio_only(path: Path, seconds: float = 2.0) -> Path:
    with av.open(str(path), "w") as out:
        _write_tone(out, out.add_stream("aac", rate=16000), seconds)
    return path
