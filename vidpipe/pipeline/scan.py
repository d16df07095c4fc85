"""Decode -> shot detection -> shots judged as clips, with their sampled frames: the scan
of a video, on its own thread, and the scan-ahead that keeps the next file's scan going
while the stages run.

The scan streams frames: each feeds the shot detector; sampled frames of the current shot
are held until its end is known, then the shot is judged as a clip (`judge_shot`). It runs
`run.decode_ahead` shots ahead of the stages (`Ahead`), so the models never wait for the
decoder, and nothing grows with video length: a few shots' sampled frames at most are held
(of a shot longer than any kept clip, only its first frames).

In a serial run the files come one after another, and a file's stages would wait for its
decode to start (a long shot with nothing to analyse is all decoding). `ScanAhead` starts
the next file's scan as soon as the file in process is decoded, and the first file's before
the models load (on 2 cores the shared videos' whole run went from 12.4 s to 10.1 s with
the other changes of issue 16, see benchmarks/README.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from vidpipe.config import ClipsConfig, Config
from vidpipe.pipeline.ahead import Ahead
from vidpipe.pipeline.clips import Clip, judge_shot
from vidpipe.pipeline.shots import ShotDetector
from vidpipe.pipeline.spans import SpanWatch
from vidpipe.store import finished
from vidpipe.video import DecodedFrame, VideoInfo, content_id, decode, file_problem, probe

log = logging.getLogger("vidpipe")

# A decode that ends this much before the stream's stated duration is reported.
TRUNCATION_TOLERANCE_S = 1.0
# Files scanned ahead of the one in the stages, at most (each holds `run.decode_ahead` shots).
FILES_AHEAD = 2


class Clock:
    """Wall seconds per part of the work (the benchmark's stage breakdown)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, part: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[part] += time.perf_counter() - started


@dataclass
class Shot:
    """A shot whose end is known: judged as a clip, with its sampled frames."""

    clip: Clip
    frames: list[DecodedFrame]
    n_sampled: int | None = None  # frames sampled, when `frames` was let go

    @property
    def n_frames(self) -> int:
        return len(self.frames) if self.n_sampled is None else self.n_sampled


class ShotAccumulator:
    """Holds the sampled frames of the current shot until its end is known.

    A shot already longer than any kept clip keeps only its first `max_duration_s` of
    frames (they are counted in its row; nothing else looks at them). A frame is judged by
    its own shot's start, so the detector's lag is respected: a cut is reported a few frames
    after it happens, and the frames in between belong to the new shot."""

    def __init__(self, video_id: str, cfg: ClipsConfig, lag_frames: int):
        self.video_id, self.cfg, self.lag = video_id, cfg, lag_frames
        self.start_s: float | None = None
        self.index = 0
        self.frames: list[DecodedFrame] = []  # sampled frames of the current shot (and maybe the next)

    def add_frame(self, frame: DecodedFrame) -> None:
        if self.start_s is None:
            self.start_s = frame.time_s  # the first clip starts at the first frame
        if frame.image is not None:
            self.frames.append(frame)
        settled = frame.index - self.lag  # frames up to this one are in the current shot for sure
        limit = self.start_s + self.cfg.max_duration_s
        if self.frames and self.frames[-1].time_s > limit:
            self.frames = [f for f in self.frames if f.time_s <= limit or f.index > settled]

    def begin(self, start_s: float) -> None:
        """The first shot starts at `start_s` (a time range of a long video): earlier frames go."""
        self.start_s = start_s
        self.frames = [f for f in self.frames if f.time_s >= start_s]

    def close_shot(self, end_s: float) -> Shot | None:
        if self.start_s is None or end_s <= self.start_s:
            return None
        clip = judge_shot(self.video_id, self.index, self.start_s, end_s, self.cfg)
        inside = [f for f in self.frames if f.time_s < end_s]
        self.frames = [f for f in self.frames if f.time_s >= end_s]
        self.index += 1
        self.start_s = end_s
        return Shot(clip, inside)


def shots_of(info: VideoInfo, cfg: Config, clock: Clock, warnings: list[str],
             progress: Callable[[float, float], None] | None, watch: SpanWatch | None) -> Iterator[Shot]:
    """Decode -> shot detection -> each shot with its sampled frames, in order. With
    `watch`, only the shots of one time range: from the cut where it starts to the cut
    where the next one does (`vidpipe.pipeline.spans`)."""
    if watch is not None:
        watch.bind(info, cfg.shots)
    shots = ShotDetector(cfg.shots, info.fps, origin_s=watch.origin_s if watch else None)
    acc = ShotAccumulator(info.video_id, cfg.clips, shots.lag_frames)
    frames = iter(decode(
        info,
        small_width=cfg.shots.analysis_width,
        sample_fps=cfg.sampling.fps,
        max_side=cfg.sampling.max_side,
        on_warning=warnings.append,
        threads=cfg.run.threads,
        start=watch.decode_from if watch else None,
    ))
    started = watch is None or watch.decode_from is None
    last_t = None
    while (frame := clock.timed("decode", lambda: next(frames, None))) is not None:
        cuts = clock.timed("shots", lambda: shots.push(frame))
        last_t = frame.time_s
        if watch is not None and (cut := clock.timed("shots", lambda: watch.push(frame, cuts))) is not None:
            if not started:  # this range's first shot starts here; the one before is not ours
                started, cuts = True, []
                acc.begin(cut)
                warnings.clear()  # the warm-up decode's warnings are the range before's to give
            if watch.ends_at(cut):  # the next range's first shot starts here
                for c in cuts:
                    if (shot := acc.close_shot(c)) is not None:
                        yield shot
                return
        if started:
            for c in cuts:
                if (shot := acc.close_shot(c)) is not None:
                    yield shot
        acc.add_frame(frame)
        if progress is not None:
            progress(frame.time_s - info.video_start_s, info.duration_s)
    if not started:
        return  # the video ended before this range's first shot
    for c in clock.timed("shots", shots.finish):
        if (shot := acc.close_shot(c)) is not None:
            yield shot
    frame_s = 1.0 / info.fps if info.fps > 0 else 0.0
    end_s = (last_t if last_t is not None else info.video_start_s) + frame_s
    if (shot := acc.close_shot(end_s)) is not None:
        yield shot
    if info.video_end_s - end_s > TRUNCATION_TOLERANCE_S:
        warnings.append(f"decoded {end_s - info.video_start_s:.2f} s of {info.duration_s:.2f} s (truncated file?)")
        log.warning("%s: %s", info.path.name, warnings[-1])


def file_stamp(path: Path) -> tuple[int, int, int]:
    """What tells whether a file changed since its content id was computed."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class Scan:
    """One file's probe and `shots_of`, on its own thread (`Ahead`) when `run.decode_ahead`
    > 0: first the file's `VideoInfo`, then its shots. Started when the file's turn comes,
    or earlier by `ScanAhead`. Its progress is held until the file's turn gives it a hook."""

    def __init__(self, cfg: Config, path: Path, video_id: str, watch: SpanWatch | None = None,
                 on_done: Callable[["Scan"], None] | None = None) -> None:
        self.cfg, self.path, self.video_id = cfg, path, video_id
        self.stamp = file_stamp(path)
        self.clock = Clock()  # its own: the decode thread's time overlaps the stages'
        self.warnings: list[str] = []
        self.produced = False  # every shot decoded (the next file may start)
        self._progress: Callable[[float, float], None] | None = None
        self._last: tuple[float, float] | None = None
        items = self._produce(watch)
        size = cfg.run.decode_ahead
        self._ahead = None if size <= 0 else Ahead(items, size, None if on_done is None else lambda: on_done(self))
        self._items = items if self._ahead is None else iter(self._ahead)

    def _produce(self, watch: SpanWatch | None) -> Iterator[Any]:
        info = probe(self.path, self.video_id)
        yield info
        yield from shots_of(info, self.cfg, self.clock, self.warnings, self._report, watch)
        self.produced = True

    def _report(self, done: float, total: float) -> None:
        self._last = (done, total)
        if self._progress is not None:
            self._progress(done, total)

    def attach(self, progress: Callable[[float, float], None] | None) -> None:
        """The file's turn: its progress goes to `progress` from now on (from where it is)."""
        self._progress = progress
        if progress is not None and self._last is not None:
            progress(*self._last)

    def info(self) -> VideoInfo:
        return next(self._items)

    def shots(self) -> Iterator[Shot]:
        return self._items

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
        self._items.close()


class ScanAhead:
    """The scans of a serial run's files, ahead of the stages.

    `expect(paths)` gives the order; `start()` scans the first file at once (while the
    models load). Then, whenever the last scan started is wholly decoded, the next file's
    starts, up to `FILES_AHEAD` files ahead of the one in process: a file's stages never wait
    for its decode to begin, and memory stays at a few files' `run.decode_ahead` shots. A
    file found done in the store (same `config_hash`; any finished row before the pipeline,
    which gives the hash, is built) is not scanned: its turn skips it. Without `expect`, a
    file is scanned when its turn comes, as in the worker processes of a parallel run."""

    def __init__(self, cfg: Config, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.config_hash: str | None = None
        self._waiting: deque[Path] = deque()  # expected files not scanned yet
        self._ahead: deque[Scan] = deque()  # scans started before their file's turn, in order
        self._last: Scan | None = None  # the scan started last (ahead, or the file in process)
        self._turn: Path | None = None  # the file claimed last
        self._filling = self._again = False
        self._lock = threading.Lock()

    def expect(self, paths: Iterable[Path]) -> None:
        """The files the run processes next, in this order; scans of files no longer
        expected are let go."""
        with self._lock:
            self._waiting = deque(Path(p) for p in paths)
            stale, self._ahead = list(self._ahead), deque()
        for scan in stale:
            scan.close()

    def start(self) -> None:
        """Scan the first expected file now."""
        self._fill(first=True)

    def claim(self, path: Path) -> Scan | None:
        """`path`'s turn: the scan started ahead for it, if any (scans of files before it,
        whose turn has passed, are let go)."""
        found, passed = None, []
        with self._lock:
            self._turn = path
            if path in self._waiting:
                self._waiting.remove(path)
            if any(scan.path == path for scan in self._ahead):
                while (scan := self._ahead.popleft()).path != path:
                    passed.append(scan)
                found = scan
        for scan in passed:
            scan.close()
        self._fill()  # a place ahead is free
        return found

    def scan(self, path: Path, video_id: str) -> Scan:
        """A scan of `path` from now, for the file in process."""
        return Scan(self.cfg, path, video_id, on_done=self._done)

    def in_process(self, scan: Scan) -> None:
        """`scan`'s file is the one in the stages now."""
        with self._lock:
            if not self._ahead:
                self._last = scan
        self._fill()

    def _done(self, scan: Scan) -> None:
        self._fill()

    def _fill(self, first: bool = False) -> None:
        """Start the next files' scans while the last one started is wholly decoded and
        fewer than `FILES_AHEAD` are ahead (one caller at a time does it: the others' calls
        make it look again)."""
        with self._lock:
            if self._filling:
                self._again = True
                return
            self._filling = True
        try:
            while True:
                with self._lock:
                    last_done = first or (self._last is not None and self._last.produced)
                    if not (last_done and self._waiting and len(self._ahead) < FILES_AHEAD):
                        if not self._again:
                            self._filling = False
                            return
                        self._again = False
                        continue
                    path = self._waiting.popleft()
                scan = self._scan_ahead(path)
                if scan is None:
                    continue
                first = False
                with self._lock:
                    late = scan.path == self._turn  # its turn came while it started: its own scan runs
                    if not late:
                        self._ahead.append(scan)
                        self._last = scan
                if late:
                    scan.close()
        except BaseException:
            with self._lock:
                self._filling = False
            raise

    def _scan_ahead(self, path: Path) -> Scan | None:
        """A scan of `path` started now, or None when its turn will skip or report it."""
        try:
            if file_problem(path) is not None:
                return None
            video_id = content_id(path)
            done = finished(self.out, video_id)
            if done is not None and self.config_hash in (None, done.config_hash):
                return None
            return Scan(self.cfg, path, video_id, on_done=self._done)
        except Exception:  # only a head start: the file's turn scans it, and reports what fails
            log.debug("%s: not scanned ahead", path, exc_info=True)
            return None
