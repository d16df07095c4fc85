"""Probe and decode videos with FFmpeg (through PyAV).

One decode per video: every frame is downscaled once for shot detection, and frames at the
sampling rate are also kept at analysis size for the detectors. Frames come out upright (the
container's rotation applied) and timed in seconds from their timestamps, so variable frame
rate files need no special case.

Times are on the file's presentation timeline: seconds after the container's start time,
the clock `ffmpeg -ss`, players and the audio track share. A video stream may start later
than the container (short_hamilton_clip.mp4: video at 0.844 s, audio at 0 s), so the first
frame is not at 0.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vidpipe.util import fit_within, first_line

log = logging.getLogger("vidpipe")

# A stream that keeps failing is given up on after this many undecodable packets in a row.
MAX_CONSECUTIVE_DECODE_ERRORS = 50


class VideoError(Exception):
    """A file that cannot be processed; the message is one line meant for the user."""


@dataclass(frozen=True)
class VideoInfo:
    """What probing a file tells us. Width and height are as displayed (rotation applied)."""

    path: Path
    video_id: str
    size_bytes: int
    duration_s: float
    fps: float  # average frame rate; frames are timed by their timestamps, not by this
    width: int
    height: int
    rotation: int  # degrees clockwise applied to decoded frames to show them upright
    has_audio: bool
    codec: str
    start_time_s: float = 0.0  # the container's start (absolute): time 0 of the presentation timeline
    video_start_s: float = 0.0  # first video timestamp on the presentation timeline
    audio_start_s: float | None = None  # first audio timestamp on it; None without audio

    @property
    def video_end_s(self) -> float:
        return self.video_start_s + self.duration_s


@dataclass
class DecodedFrame:
    """One decoded frame: a small copy for shot detection, and for sampled frames an
    analysis-size copy. `scale` maps analysis pixels back to source (displayed) pixels."""

    index: int  # position in decode order
    time_s: float  # presentation timeline (see the module docstring)
    pts: int  # relative to the first frame, in `time_base` units
    time_base: Fraction
    small: np.ndarray  # BGR uint8, ~`small_width` wide
    image: np.ndarray | None  # BGR uint8, longest side <= max_side, only on sampled frames
    scale: float


def content_id(path: Path, chunk: int = 1 << 20) -> str:
    """Identify a video by its bytes, so a renamed or moved file is still recognised."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror  # without the errno and path FFmpegError's str() adds
    return first_line(exc)


def _picture_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is moving pictures, not an attached picture (cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _start_s(start: int | None, time_base) -> float | None:
    return float(start * time_base) if start is not None and time_base else None


def _open(path: Path) -> av.container.InputContainer:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise VideoError(f"cannot read file: {e.strerror}") from None
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(f"not a readable video: {_one_line(e)}") from None


def _rotation_of(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Clockwise degrees to turn decoded frames upright, read from the first frame's
    display matrix (PyAV reports it counter-clockwise)."""
    try:
        for frame in container.decode(stream):
            return int(round(-(frame.rotation or 0) / 90.0)) % 4 * 90
    except av.error.FFmpegError:
        return 0
    return 0


def probe(path: Path, video_id: str | None = None) -> VideoInfo:
    """Duration, frame rate, size, rotation and audio presence; raises VideoError.
    `video_id` saves hashing the file again when the caller already has it."""
    path = Path(path)
    container = _open(path)
    try:
        stream = _picture_stream(container)
        if stream is None:
            if container.streams.video and container.streams.audio:
                kind = "audio file (its only picture is cover art)"
            else:
                kind = "audio-only file" if container.streams.audio else "no video stream"
            raise VideoError(f"{kind}: nothing to look at")
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoError("video stream has no frame size (corrupt header?)")
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        video_start = _start_s(stream.start_time, stream.time_base)
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_start = _start_s(audio.start_time, audio.time_base) if audio is not None else None
        # The container's start is the earliest stream's (FFmpeg rounds it to microseconds).
        starts = [t for t in (video_start, audio_start) if t is not None]
        start = min(starts) if starts else (container.start_time or 0) / av.time_base
        rotation = _rotation_of(container, stream)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            video_id=video_id or content_id(path),
            size_bytes=path.stat().st_size,
            duration_s=duration,
            fps=fps,
            width=width,
            height=height,
            rotation=rotation,
            has_audio=audio is not None,
            codec=stream.codec_context.name,
            start_time_s=start,
            video_start_s=(video_start if video_start is not None else start) - start,
            audio_start_s=None if audio is None else (audio_start if audio_start is not None else start) - start + 0.0,
        )
    finally:
        container.close()


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-rotation // 90))


def decode(
    info: VideoInfo,
    *,
    small_width: int = 256,
    sample_fps: float = 4.0,
    max_side: int = 640,
    want_sample: Callable[[float], bool] | None = None,
    on_warning: Callable[[str], None] | None = None,
    threads: int = 0,
) -> Iterator[DecodedFrame]:
    """Stream frames of one video in display order with timestamps in seconds.

    `want_sample(time_s) -> bool` lets the caller skip the analysis copy for frames it will
    not look at (e.g. inside shots already too long to keep). Undecodable packets are skipped
    with a warning; a stream that stays broken ends the video early (truncated files).
    Warnings go to the log and to `on_warning` (one line each). `threads` caps FFmpeg's
    decoding threads (0: FFmpeg's choice, one per core).
    """

    def warn(message: str) -> None:
        log.warning("%s: %s", info.path.name, message)
        if on_warning is not None:
            on_warning(message)

    container = _open(info.path)
    try:
        stream = _picture_stream(container)
        stream.thread_type = "AUTO"  # FFmpeg's frame+slice threads
        if threads > 0:
            stream.codec_context.thread_count = threads
        # Sizes before rotation: rotation happens after the (cheap) downscale.
        src_w, src_h = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
        # PySceneDetect's own downscale (longest side / 256, no smoothing): same cuts as its CLI.
        factor = max(1.0, max(src_w, src_h) / small_width)
        small_size = (max(1, round(src_w / factor)), max(1, round(src_h / factor)))
        analysis_size = fit_within(src_w, src_h, max_side, even=True)[:2]
        scale = max(src_w, src_h) / max(analysis_size)
        # One swscale context per output size, reused for every frame (half the per-frame cost).
        to_small, to_analysis = VideoReformatter(), VideoReformatter()
        time_base: Fraction | None = None
        period = 1.0 / sample_fps if sample_fps > 0 else math.inf
        next_sample = -math.inf if sample_fps > 0 else math.inf
        t0 = 0.0
        index = 0
        errors = 0
        pts0: int | None = None
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                warn(f"demuxing stopped at frame {index}: {_one_line(e)}")
                break
            try:
                frames = packet.decode()
                errors = 0
            except av.error.FFmpegError as e:
                errors += 1
                if errors == 1:
                    warn(f"skipped undecodable data near frame {index}: {_one_line(e)}")
                if errors >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    warn(f"too many decode errors, stopped at frame {index}")
                    break
                continue
            for frame in frames:
                if frame.pts is None or frame.time_base is None:
                    continue
                if time_base is None or time_base != frame.time_base:
                    time_base = Fraction(frame.time_base)
                if pts0 is None:
                    pts0 = frame.pts  # streams may start at a non-zero timestamp
                pts = frame.pts - pts0
                t = float(frame.pts * time_base) - info.start_time_s
                small = to_small.reformat(
                    frame, width=small_size[0], height=small_size[1], format="bgr24", interpolation="FAST_BILINEAR"
                ).to_ndarray()
                image = None
                if t + 1e-6 >= next_sample:  # the sampling grid starts at the first frame
                    t0 = t if next_sample == -math.inf else t0
                    next_sample = t0 + (math.floor((t - t0 + 1e-6) / period) + 1) * period
                    if want_sample is None or want_sample(t):
                        image = to_analysis.reformat(
                            frame, width=analysis_size[0], height=analysis_size[1], format="bgr24"
                        ).to_ndarray()
                        image = _upright(image, info.rotation)
                yield DecodedFrame(
                    index=index,
                    time_s=t,
                    pts=pts,
                    time_base=time_base,
                    small=_upright(small, info.rotation),
                    image=image,
                    scale=scale,
                )
                index += 1
        if index == 0:
            raise VideoError("no decodable video frames (corrupt or truncated file)")
    finally:
        container.close()
