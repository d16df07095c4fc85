"""The pictures a review shows: the clip's original file (or, when a browser cannot play
it, the clip cut and re-encoded as H.264), and face crops cut from the video with PyAV at
the face's time and box.

Files are reached only through a clip id of the store: the path comes from the store's
`videos` table, and the file must still be a regular file of the recorded size, so a file
swapped or replaced by a link to something else after the run is not served.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidpipe.review.queue import Clip, Face, Video
from vidpipe.util import shrink

# What Chromium, Firefox and Safari play from a file (HEVC, MPEG-4 part 2, AVI… are not).
PLAYABLE_CODECS = {"h264", "vp8", "vp9", "av1"}
PLAYABLE_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm"}
CROP_SIDE = 160
CUT_MAX_SIDE = 640


class MediaGone(Exception):
    """The clip's video is not the file the store recorded any more."""


def checked_file(video: Video) -> Path:
    """The video's file, when it is still a regular file of the size the store recorded."""
    try:
        st = os.stat(video.path)  # follows links: what would be read
    except OSError:
        raise MediaGone(f"{video.path} is gone") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size != video.size_bytes:
        raise MediaGone(f"{video.path} is not the file the store recorded")
    return video.path


def playable(video: Video) -> bool:
    return video.path.suffix.lower() in PLAYABLE_SUFFIXES and (video.codec or "").lower() in PLAYABLE_CODECS


def mime_type(path: Path) -> str:
    return {".webm": "video/webm", ".mov": "video/mp4"}.get(path.suffix.lower(), "video/mp4")


def face_jpeg(video: Video, face: Face, side: int = CROP_SIDE) -> bytes:
    """A JPEG of the face (30 % margin) cut from the frame shown at its time, at most
    `side` px."""
    import cv2

    from vidpipe.backends.base import crop
    from vidpipe.identities.cluster import grab_frame
    from vidpipe.video import VideoError

    try:
        frame = grab_frame(checked_file(video), face.time_s)
    except (VideoError, OSError) as e:
        raise MediaGone(str(e)) from None
    if frame is None:
        raise MediaGone(f"no frame at {face.time_s:.2f} s in {video.path}")
    image, _ = shrink(crop(frame, np.asarray(face.bbox, np.float32), pad=0.3), side)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise MediaGone("cannot encode the crop")
    return data.tobytes()


class Cuts:
    """Clips of files a browser cannot play, cut and encoded as H.264 MP4 once, kept in a
    temporary folder for the life of the server."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vidpipe-review-")
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, video: Video, clip: Clip) -> Path:
        target = Path(self._dir.name) / f"{clip.clip_id}.mp4"
        with self._guard:
            lock = self._locks.setdefault(clip.clip_id, threading.Lock())
        with lock:
            if not target.exists():
                tmp = target.with_suffix(".part.mp4")
                cut_clip(checked_file(video), clip.start_s, clip.end_s, tmp)
                tmp.replace(target)
        return target

    def close(self) -> None:
        self._dir.cleanup()


def cut_clip(path: Path, start_s: float, end_s: float, target: Path, fps: int = 25) -> None:
    """Frames shown between start_s and end_s (presentation timeline) as an H.264 MP4 whose
    time 0 is start_s, upright, at most CUT_MAX_SIDE px (no sound)."""
    import av

    from vidpipe.util import fit_within
    from vidpipe.video import VideoError, probe

    info = probe(path)
    w, h, _ = fit_within(info.width, info.height, CUT_MAX_SIDE, even=True)
    try:
        with av.open(str(path)) as src, av.open(str(target), "w", format="mp4") as dst:
            stream = src.streams.video[0]
            out = dst.add_stream("libx264", rate=fps)
            out.width, out.height, out.pix_fmt = w, h, "yuv420p"
            out.options = {"preset": "veryfast", "crf": "23"}
            first = start_s + info.start_time_s
            src.seek(max(0, int(first / stream.time_base)), stream=stream, backward=True)
            n = 0
            for frame in src.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base) - info.start_time_s
                if t < start_s - 1e-3:
                    continue
                if t >= end_s:
                    break
                image = frame.to_ndarray(format="bgr24")
                if info.rotation:
                    image = np.ascontiguousarray(np.rot90(image, k=-info.rotation // 90))
                picture = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(w, h, "yuv420p")
                picture.pts, picture.time_base = round((t - start_s) * fps), Fraction(1, fps)
                if picture.pts >= n:  # one picture per output tick
                    dst.mux(out.encode(picture))
                    n = picture.pts + 1
            dst.mux(out.encode(None))
    except (av.error.FFmpegError, VideoError) as e:
        target.unlink(missing_ok=True)
        raise MediaGone(f"cannot cut {path.name}: {e}") from None
