"""Long videos in time ranges, so that one 2-hour file does not sit on one worker.

A video longer than 1.5 x `run.split_s` is cut into about `split_s`-long ranges, each
processed by any worker into a part of the store (`OUT/.ranges/`), then merged into the
video's tables, committed atomically as a whole video is. The result is the one processing
the whole file gives, row for row; this is how:

- **Where a range starts**, and the sync cuts that make neighbouring ranges agree:
  `vidpipe.pipeline.spans`.
- **Checked, not trusted.** Each range records where it started and ended (time and frame
  number); the merge checks that neighbours agree and that every range reached its end,
  and otherwise processes the video whole. Clip numbers are renumbered at the merge
  (a range cannot know how many shots came before it).

Only the adaptive detector (the default) is split this way; with the content detector,
long videos are processed whole. A killed run resumes range by range.
"""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidpipe.pipeline.clips import clip_id
from vidpipe.pipeline.runner import VideoOutcome, VideoProcessor
from vidpipe.pipeline.spans import Span, SpanWatch
from vidpipe.store import VideoLock, VideoWriter, finished, table_files
from vidpipe.util import atomic_write_text
from vidpipe.video import probe

log = logging.getLogger("vidpipe")

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


def range_done(processor: VideoProcessor, video_id: str, index: int) -> bool:
    return (_part(processor.out, video_id, processor.config_hash, index) / "range.json").exists()


def process_range(processor: VideoProcessor, task: RangeTask) -> VideoOutcome:
    """One range into its part of the store (atomically; skipped when a run before did it)."""

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


def merge_ranges(processor: VideoProcessor, task: MergeTask) -> VideoOutcome:
    """The video's parts into its tables, committed as one video; the whole video processed
    again when they do not add up."""

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


def _read_record(processor: VideoProcessor, video_id: str, index: int) -> dict[str, Any] | None:
    marker = _part(processor.out, video_id, processor.config_hash, index) / "range.json"
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    for key in ("start", "end"):
        record[key] = tuple(record[key]) if record[key] is not None else None
    return record


def _merge(processor: VideoProcessor, path: Path, video_id: str, records: list[dict[str, Any]]) -> VideoOutcome:

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
