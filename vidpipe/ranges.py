"""Long videos in time ranges, so that one 2-hour file does not sit on one worker.

A video longer than 1.5 x `run.split_s` is cut into about `split_s`-long ranges, each
processed by any worker into a part of the store (`OUT/.ranges/`), then merged into the
video's tables, committed atomically as a whole video is. The result is the one processing
the whole file gives, row for row; this is how:

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
- **Checked, not trusted.** Each range records where it started and ended (time and frame
  number); the merge checks that neighbours agree and that every range reached its end,
  and otherwise processes the video whole. Clip numbers are renumbered at the merge
  (a range cannot know how many shots came before it).

Only the adaptive detector (the default) is split this way; with the content detector,
long videos are processed whole. A killed run resumes range by range.
"""

from __future__ import annotations

import bisect
import ctypes
import dataclasses
import json
import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidpipe.config import Config, ShotsConfig
from vidpipe.pipeline.clips import clip_id
from vidpipe.pipeline.shots import ShotDetector
from vidpipe.store import VideoLock, VideoWriter, finished, table_files
from vidpipe.util import atomic_write_text
from vidpipe.video import DecodedFrame, DecodeStart, VideoError, VideoInfo, keyframes, probe

if TYPE_CHECKING:
    from vidpipe.pipeline.runner import VideoOutcome, VideoProcessor

log = logging.getLogger("vidpipe")

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


# ---------------------------------------------------------------- tasks

@dataclass(frozen=True)
class RangeTask:
    path: str
    video_id: str
    span: Span


@dataclass(frozen=True)
class MergeTask:
    path: str
    video_id: str
    count: int


def parts_root(out: Path, video_id: str, config_hash: str) -> Path:
    """Where a video's range parts wait for the merge (hidden: readers skip it)."""
    return Path(out) / ".ranges" / f"{video_id}-{config_hash}"


def _part(out: Path, video_id: str, config_hash: str, index: int) -> Path:
    return parts_root(out, video_id, config_hash) / f"{index:04d}"


def range_done(processor: "VideoProcessor", video_id: str, index: int) -> bool:
    return (_part(processor.out, video_id, processor.config_hash, index) / "range.json").exists()


def process_range(processor: "VideoProcessor", task: RangeTask) -> "VideoOutcome":
    """One range into its part of the store (atomically; skipped when a run before did it)."""
    from vidpipe.pipeline.runner import VideoOutcome

    started = time.perf_counter()
    part = _part(processor.out, task.video_id, processor.config_hash, task.span.index)
    lock = VideoLock(processor.out, f"{task.video_id}-{processor.config_hash}-{task.span.index:04d}")
    lock.acquire(wait=True)  # another run on the same store may be doing this range
    try:
        if not (part / "range.json").exists():
            watch = SpanWatch(task.span)
            outcome = processor.process_into(Path(task.path), task.video_id, None, watch=watch, out=part)
            record = {field: getattr(outcome, field) for field in (
                "status", "error", "warning", "n_clips", "n_clips_kept", "timings", "model_seconds", "model_calls")}
            record.update(watch.record(), seconds=time.perf_counter() - started)
            atomic_write_text(part / "range.json", json.dumps(record))
    finally:
        lock.release()
    return VideoOutcome(task.path, task.video_id, "range")


def _check(records: list[dict[str, Any] | None]) -> str | None:
    """Why the parts do not add up to the whole video (None when they do)."""
    for i, r in enumerate(records):
        if r is None:
            return f"range {i} is missing"
        if r["status"] != "ok":
            return f"range {i} failed: {r['error']}"
        if not r["consistent"]:
            return f"range {i}: the shot detector did not cut where the range ends"
    for i in range(1, len(records)):
        if records[i - 1]["end"] != records[i]["start"]:
            return f"ranges {i - 1} and {i} disagree on the cut between them"
    if records[-1]["end"] is not None:
        return "the last range did not reach the video's end"
    return None


def _renumber(table: pa.Table, video_id: str, offset: int) -> pa.Table:
    """A range's rows with clip numbers counted from the video's first clip."""
    if offset == 0 or not len(table):
        return table
    for name in ("clip_id", "shot_index"):
        if name not in table.column_names:
            continue
        i = table.column_names.index(name)
        column = table.column(i)
        if name == "shot_index":
            column = pc.add(column, pa.scalar(offset, column.type))
        else:
            renamed = {c: clip_id(video_id, int(c.rsplit("-", 1)[1]) + offset)
                       for c in pc.unique(column).to_pylist() if c is not None}
            column = pa.array([renamed.get(c) for c in column.to_pylist()], column.type)
        table = table.set_column(i, name, column)
    return table


def merge_ranges(processor: "VideoProcessor", task: MergeTask) -> "VideoOutcome":
    """The video's parts into its tables, committed as one video; the whole video processed
    again when they do not add up."""
    from vidpipe.pipeline.runner import VideoOutcome

    started = time.perf_counter()
    path = Path(task.path)
    lock = VideoLock(processor.out, task.video_id)
    lock.acquire(wait=True)
    try:
        done = finished(processor.out, task.video_id)
        if done is not None and done.config_hash == processor.config_hash:
            return VideoOutcome(task.path, task.video_id, "skipped", error=done.error)  # another run merged it
        records = [_read_record(processor, task.video_id, i) for i in range(task.count)]
        problem = _check(records)
        _return_freed_memory()
        if problem is None:
            outcome = _merge(processor, path, task.video_id, records)
        else:
            log.warning("%s: %s; processing it whole", path.name, problem)
            outcome = processor.process_into(path, task.video_id, None)
        for stale in (Path(processor.out) / ".ranges").glob(f"{task.video_id}-*"):
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        lock.release()
    outcome.seconds = time.perf_counter() - started + sum(r["seconds"] for r in records if r is not None)
    return outcome


def _return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc). The merge's Arrow buffers
    come from Arrow's own allocator: without this they would stack on top of what decoding
    the ranges freed, and a worker's peak memory would grow with the video's length."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _read_record(processor: "VideoProcessor", video_id: str, index: int) -> dict[str, Any] | None:
    marker = _part(processor.out, video_id, processor.config_hash, index) / "range.json"
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    for key in ("start", "end"):
        record[key] = tuple(record[key]) if record[key] is not None else None
    return record


def _merge(processor: "VideoProcessor", path: Path, video_id: str, records: list[dict[str, Any]]) -> "VideoOutcome":
    from vidpipe.pipeline.runner import VideoOutcome

    started = time.perf_counter()
    outcome = VideoOutcome(str(path), video_id, "ok")
    info = probe(path, video_id)
    with VideoWriter(processor.out, video_id, processor.schemas) as writer:
        offset = 0
        for index, record in enumerate(records):
            part = _part(processor.out, video_id, processor.config_hash, index)
            for table in processor.schemas:
                if table == "videos":
                    continue
                for file in table_files(part, table):  # in writer-sized batches: memory flat in video length
                    for batch in pq.ParquetFile(file).iter_batches(batch_size=writer.flush_rows):
                        writer.add(table, _renumber(pa.Table.from_batches([batch]), video_id, offset))
            offset += record["n_clips"]
            outcome.n_clips += record["n_clips"]
            outcome.n_clips_kept += record["n_clips_kept"]
            outcome.model_seconds += record["model_seconds"]
            for key, seconds in record["timings"].items():
                outcome.timings[key] = outcome.timings.get(key, 0.0) + seconds
            for task, calls in record["model_calls"].items():
                outcome.model_calls[task] = outcome.model_calls.get(task, 0) + calls
        warnings = [w for r in records if r["warning"] for w in r["warning"].split("; ")]
        outcome.warning = "; ".join(dict.fromkeys(warnings)) or None
        outcome.timings["merge"] = time.perf_counter() - started
        writer.add("videos", [processor.video_row(path, video_id, info, outcome)])
        writer.commit()
        outcome.rows = {t: n for t, n in writer.rows.items() if t != "videos"}
    return outcome
