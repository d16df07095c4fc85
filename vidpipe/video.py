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

import array
import hashlib
import logging
import math
import os
import stat
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


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be a video file, found before reading it (a FIFO blocks the first
    read forever, /dev/zero never ends), as one line; None when it can be read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"dangling symbolic link to {os.readlink(path)}" if os.path.islink(path) else "no such file or directory"
    except OSError as e:
        return f"cannot read file: {e.strerror}"
    if not stat.S_ISREG(mode):
        kind = next((what for is_kind, what in _NOT_REGULAR if is_kind(mode)), "not a file")
        return f"not a regular file ({kind}{' via a symbolic link' if os.path.islink(path) else ''})"
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        return f"cannot read file: {e.strerror}"
    return None


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


@dataclass(frozen=True)
class DecodeStart:
    """Where a decode of part of a video starts: a keyframe, and what the decode of the
    whole video says there, so that both yield the same frames with the same numbers,
    timestamps and sampling (a long video is processed in time ranges)."""

    pts: int  # the keyframe's timestamp, in the stream's time base
    time_s: float  # the same on the presentation timeline
    index: int  # its frame number in the whole video's decode order
    pts0: int  # timestamp of the video's first frame (`DecodedFrame.pts` counts from it)
    t0: float  # time of the video's first frame: the origin of the sampling grid


def keyframes(info: VideoInfo) -> tuple[DecodeStart, list[DecodeStart]] | None:
    """The video's first frame and its keyframes, as places a decode may start, found by
    reading the packets (no decoding but the first frame). None when packets carry no
    timestamps (frames cannot be numbered without decoding them all)."""
    with _open(info.path) as container:
        stream = _picture_stream(container)
        first = next((f for f in container.decode(stream) if f.pts is not None), None)
    if first is None or not first.time_base:
        return None
    tb = Fraction(first.time_base)
    pts0, t0 = first.pts, float(first.pts * tb) - info.start_time_s
    stamps, keys = array.array("q"), []  # 8 bytes a frame: 2 hours at 30 fps is 1.7 MB
    with _open(info.path) as container:
        for packet in container.demux(_picture_stream(container)):
            if packet.size == 0:
                continue  # the demuxer's flush packets
            if packet.pts is None:
                return None
            stamps.append(packet.pts)
            if packet.is_keyframe and packet.pts >= pts0:
                keys.append(packet.pts)
    # A frame's number is how many frames are shown before it (display order, from the first).
    shown = np.sort(np.frombuffer(stamps, np.int64))
    shown = shown[shown >= pts0]
    numbers = np.searchsorted(shown, keys)
    origin = DecodeStart(pts0, t0, 0, pts0, t0)
    return origin, sorted({DecodeStart(k, float(k * tb) - info.start_time_s, int(n), pts0, t0)
                           for k, n in zip(keys, numbers)}, key=lambda d: d.pts)


def decode(
    info: VideoInfo,
    *,
    small_width: int = 256,
    sample_fps: float = 4.0,
    max_side: int = 640,
    on_warning: Callable[[str], None] | None = None,
    threads: int = 0,
    start: DecodeStart | None = None,
) -> Iterator[DecodedFrame]:
    """Stream frames of one video in display order with timestamps in seconds.

    Undecodable packets are skipped with a warning; a stream that stays broken ends the
    video early (truncated files). Warnings go to the log and to `on_warning` (one line
    each). `threads` caps FFmpeg's decoding threads (0: FFmpeg's choice, one per core).
    `start` (from `keyframes`) decodes from that keyframe on, frames numbered and sampled as
    in the decode of the whole video.
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
        # One swscale context per output size, reused for every frame (half the per-frame cost),
        # on this thread: swscale's automatic slice threads cost more than they save on these
        # small outputs (the shared set's whole run: 1 s of wall time on 2 cores).
        to_small, to_analysis = VideoReformatter(), VideoReformatter()
        time_base: Fraction | None = None
        period = 1.0 / sample_fps if sample_fps > 0 else math.inf
        next_sample = -math.inf if sample_fps > 0 else math.inf
        t0: float | None = None if start is None else start.t0
        index = 0 if start is None else start.index
        errors = 0
        pts0: int | None = None if start is None else start.pts0
        if start is not None:
            container.seek(start.pts, stream=stream, backward=True, any_frame=False)
        first_index = index
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
                if start is not None and index == first_index:
                    if frame.pts < start.pts:
                        continue  # shown before the keyframe (open GOP): the range before has it
                    if frame.pts != start.pts:
                        raise VideoError(f"cannot seek to the keyframe at {float(start.pts * frame.time_base):.3f} s")
                if time_base is None or time_base != frame.time_base:
                    time_base = Fraction(frame.time_base)
                if pts0 is None:
                    pts0 = frame.pts  # streams may start at a non-zero timestamp
                pts = frame.pts - pts0
                t = float(frame.pts * time_base) - info.start_time_s
                small = to_small.reformat(
                    frame, width=small_size[0], height=small_size[1], format="bgr24", interpolation="FAST_BILINEAR",
                    threads=1,
                ).to_ndarray()
                image = None
                if t0 is None:
                    t0 = t  # the sampling grid starts at the first frame
                if t + 1e-6 >= next_sample:  # the first frame of each sampling period
                    next_sample = t0 + (math.floor((t - t0 + 1e-6) / period) + 1) * period
                    image = to_analysis.reformat(
                        frame, width=analysis_size[0], height=analysis_size[1], format="bgr24", threads=1
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
        if index == first_index:
            raise VideoError("no decodable video frames (corrupt or truncated file)")
    finally:
        container.close()


def decode_range(
    info: VideoInfo,
    start_s: float,
    end_s: float,
    fps: float,
    *,
    gray: bool = False,
    max_side: int | None = None,
    threads: int = 0,
) -> Iterator[tuple[float, np.ndarray]]:
    """The picture on screen at each time start_s + k/fps (k = 0, 1, … while < end_s):
    (time_s, image), upright, on the presentation timeline; grey (the luma plane) or BGR,
    shrunk to `max_side` when given. Seeks to the keyframe before `start_s` and decodes
    forward, so a range costs its own frames plus part of a GOP. For models that want a fixed
    frame rate (active speaker: 25 fps face crops); the run's one decode stays `decode`.
    A decoding error ends the range early: the last picture stays on screen."""
    if fps <= 0 or end_s <= start_s:
        return
    container = _open(info.path)
    try:
        stream = _picture_stream(container)
        stream.thread_type = "AUTO"
        if threads > 0:
            stream.codec_context.thread_count = threads
        src_w, src_h = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
        size = fit_within(src_w, src_h, max_side, even=True)[:2] if max_side else (src_w, src_h)
        to_image = VideoReformatter()
        fmt = "gray" if gray else "bgr24"
        shown: av.VideoFrame | None = None  # the latest frame at or before the next grid time
        image: np.ndarray | None = None  # `shown` converted, once

        def picture() -> np.ndarray:
            nonlocal image
            if image is None:
                out = to_image.reformat(shown, width=size[0], height=size[1], format=fmt).to_ndarray()
                image = _upright(out, info.rotation)
            return image

        k = 0
        try:
            if start_s > info.video_start_s and stream.time_base:
                container.seek(int((start_s + info.start_time_s) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    continue
                t = float(frame.pts * frame.time_base) - info.start_time_s
                if shown is None:  # the first picture also stands for grid times before it
                    shown = frame
                while start_s + k / fps < end_s and start_s + k / fps < t - 1e-6:
                    yield start_s + k / fps, picture()
                    k += 1
                if start_s + k / fps >= end_s:
                    return
                shown, image = frame, None
        except av.error.FFmpegError as e:
            log.warning("%s: decoding stopped at %.2f s: %s", info.path.name, start_s + k / fps, _one_line(e))
        while shown is not None and start_s + k / fps < end_s:
            yield start_s + k / fps, picture()
            k += 1
    finally:
        container.close()
