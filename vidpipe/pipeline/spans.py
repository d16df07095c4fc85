"""Where a long video is cut into time ranges, and how a range finds its first and last shot.

A video longer than 1.5 x `run.split_s` is cut into about `split_s`-long ranges
(`plan_spans`); `vidpipe.ranges` processes and merges them. The runner imports this module
and `vidpipe.ranges` imports the runner, never the other way round.

- **Where a range starts.** Each range decodes from a keyframe a warm-up before its nominal
  start K, so its frames, frame numbers and sampling grid are the whole decode's
  (`video.DecodeStart`). It owns the shots from the first *sync cut* at or after K up to
  the first sync cut at or after the next range's K; the range before runs on to that same
  cut, so every shot belongs to exactly one range, however long.
- **Sync cuts.** PySceneDetect's AdaptiveDetector reports a cut at frame t when t's score
  stands out from its neighbours' (`threshold_met`, a function of the frames around t only)
  and t is at least `min_scene_len` after the last cut it reported: that last condition
  carries history. At a frame t whose threshold is met and where no other frame in the
  `min_scene_len` before it met it, the condition holds whatever the history, so the
  detector of the whole video and one warmed up shortly before both cut at t, and agree
  from there on. A second detector without the minimum length (its cuts are the frames
  whose threshold is met) watches the frames around each K to find that cut; both ranges
  next to K run it from the same frame, so they find the same one.

Only the adaptive detector (the default) is split this way; with the content detector,
long videos are processed whole.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidpipe.config import Config, ShotsConfig
from vidpipe.pipeline.shots import ShotDetector
from vidpipe.video import DecodedFrame, DecodeStart, VideoError, VideoInfo, keyframes, probe

SPLIT_FACTOR = 1.5  # videos longer than this many split_s are split
WARMUP_S = 1.0  # decoded before the watch starts, so the shot detector's scores are exact


@dataclass(frozen=True)
class Span:
    """One time range of a video: the shots from the first sync cut at or after `start_s`
    (None: the video's first frame) to the first sync cut at or after `end_s` (None: the
    video's end)."""

    index: int
    count: int  # ranges of the video
    start_s: float | None
    end_s: float | None
    decode_from: DecodeStart | None  # the keyframe its decode starts at; None: the video's start
    origin_s: float  # time of the video's first frame


def _watch_lead_s(cfg: ShotsConfig, fps: float, window: int) -> float:
    """How long before K the watch starts: the minimum shot length, plus the frames the
    detector needs before its scores are exact, plus a margin."""
    frame_s = 1.0 / fps if fps > 0 else 0.04
    return cfg.min_scene_len_s + (2 * window + 3) * frame_s + 1.0


def _long(info: VideoInfo, cfg: Config, split_s: float) -> bool:
    return split_s > 0 and cfg.shots.detector == "adaptive" and info.duration_s >= SPLIT_FACTOR * split_s


def may_split(path: Path, cfg: Config, split_s: float) -> bool:
    """Whether the video is long enough to be split (a quick look: no keyframes read)."""
    try:
        return _long(probe(path, ""), cfg, split_s)
    except (VideoError, OSError):
        return False


def plan_spans(path: Path, video_id: str, cfg: Config, split_s: float) -> list[Span] | None:
    """The time ranges of a long video, about `split_s` each, or None to process it whole
    (short, unreadable — the whole run then says why —, no timestamps, content detector)."""
    if split_s <= 0:
        return None
    try:
        info = probe(path, video_id)
        found = keyframes(info) if _long(info, cfg, split_s) else None
    except (VideoError, OSError):
        return None
    if found is None:
        return None
    count = max(2, round(info.duration_s / split_s))
    return spans_at(info, cfg, found, [found[0].time_s + i * info.duration_s / count for i in range(1, count)])


def spans_at(info: VideoInfo, cfg: Config, found: tuple[DecodeStart, list[DecodeStart]],
             starts: list[float]) -> list[Span] | None:
    """Ranges starting near the given times (each range decodes from the last keyframe a
    warm-up before its start; a time with no such keyframe after the previous one is dropped)."""
    origin, keys = found
    lead = _watch_lead_s(cfg.shots, info.fps, ShotDetector(cfg.shots, info.fps).lag_frames) + WARMUP_S
    times = [k.time_s for k in keys]
    cuts: list[tuple[float, DecodeStart]] = []
    for k in sorted(starts):
        j = bisect.bisect_right(times, k - lead) - 1
        if j >= 0 and keys[j].pts > (cuts[-1][1].pts if cuts else origin.pts):
            cuts.append((k, keys[j]))
    if not cuts:
        return None
    heads: list[tuple[float | None, DecodeStart | None]] = [(None, None), *cuts]
    ends: list[float | None] = [k for k, _ in cuts] + [None]
    return [Span(i, len(heads), start, end, key, origin.t0) for i, ((start, key), end) in enumerate(zip(heads, ends))]


class SpanWatch:
    """Finds, as a range's frames go by, the sync cuts where it starts and ends, and
    records them (time and frame number) for the merge to check."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.decode_from = span.decode_from
        self.origin_s = span.origin_s
        self._targets = [t for t in (span.start_s, span.end_s) if t is not None]
        self.start: tuple[float, int] | None = None  # (time, frame number) of the first shot
        self.end: tuple[float, int] | None = None  # of the next range's first shot; None: the video's end
        self.consistent = True  # the detector cut where the watch said it would

    def bind(self, info: VideoInfo, cfg: ShotsConfig) -> None:
        self._fps = info.fps
        self._twin_cfg = dataclasses.replace(cfg, min_scene_len_s=0.0)
        window = ShotDetector(cfg, info.fps).lag_frames
        self._lead = _watch_lead_s(cfg, info.fps, window)
        self._gap = cfg.min_scene_len_s + 0.5 / (info.fps if info.fps > 0 else 25.0)
        self._recent: deque[tuple[float, int]] = deque(maxlen=4 * window + 8)
        self._twin: ShotDetector | None = None
        self._last: float | None = None

    def push(self, frame: DecodedFrame, cuts: list[float]) -> float | None:
        """Feed one frame (after the range's own detector, whose `cuts` these are); the sync
        cut found at this frame, if any."""
        self._recent.append((frame.time_s, frame.index))
        if not self._targets:
            return None
        target = self._targets[0]
        if self._twin is None:
            if frame.time_s < target - self._lead:
                return None
            self._twin = ShotDetector(self._twin_cfg, self._fps, origin_s=self.origin_s)
            self._last = None
        for t in self._twin.push(frame):
            synced = t >= target and (self._last is None or t - self._last >= self._gap)
            self._last = t
            if synced:
                return self._found(t, frame, cuts)
        return None

    def _found(self, t: float, frame: DecodedFrame, cuts: list[float]) -> float:
        at = min(self._recent, key=lambda r: abs(r[0] - t))
        self.consistent &= t in cuts
        if self.start is None and self.span.start_s is not None:
            self.start = at
        if self.ends_at(t):
            self.end = at
        self._targets = [k for k in self._targets if k > t]
        if self._targets and frame.time_s < self._targets[0] - self._lead:
            self._twin = None  # watch again from the same frame as the next range will
        return t

    def ends_at(self, t: float) -> bool:
        return self.span.end_s is not None and t >= self.span.end_s

    def record(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "consistent": self.consistent}
