"""One video through every stage, into the store.

The decode loop streams frames: each frame feeds the shot detector; sampled frames of the
current shot are held until its end is known. Then the shot is judged as a clip and, when
kept, handed to the configured stages in order; their rows go to the store writer. Nothing
grows with video length: at most one shot's sampled frames are held (frames of shots
already longer than any kept clip are not even sampled). The runner knows no stage by
name: it loops over `Stage` objects and applies their `StageResult`s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vidpipe._version import __version__
from vidpipe.backends.base import Detections
from vidpipe.config import Config
from vidpipe.pipeline.clips import Clip, judge_shot
from vidpipe.pipeline.shots import ShotDetector
from vidpipe.pipeline.stage import ClipContext, Frame, Stage, backend_owner, stage_classes
from vidpipe.registry import Backends, NoBackendAvailable, log_once
from vidpipe.store import Manifest, VideoLock, VideoWriter, finished, record_path, table_schemas
from vidpipe.util import first_line
from vidpipe.video import DecodedFrame, VideoError, VideoInfo, content_id, decode, probe
from vidpipe.weights import describe_file

log = logging.getLogger("vidpipe")

# A decode that ends this much before the stream's stated duration is reported.
TRUNCATION_TOLERANCE_S = 1.0


@dataclass
class VideoOutcome:
    """What happened to one input file."""

    path: str
    video_id: str | None
    status: str  # 'ok' | 'error' | 'skipped' (done before, same content and config) | 'busy' (another process has it)
    error: str | None = None
    warning: str | None = None
    n_clips: int = 0
    n_clips_kept: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows written per table
    seconds: float = 0.0  # wall time spent on it
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per part: decode, shots, <stage>, write
    model_seconds: float = 0.0  # pure inference time of every network call
    model_calls: dict[str, int] = field(default_factory=dict)  # network calls per backend task


class _Clock:
    """Wall seconds per part of the work (the benchmark's stage breakdown)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, part: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[part] += time.perf_counter() - started


class _ShotAccumulator:
    """Holds the sampled frames of the current shot; when its end is known, judges it as a
    clip, runs the stages on kept clips only, and hands the rows to the writer."""

    def __init__(self, info: VideoInfo, cfg: Config, stages: list[Stage], writer: VideoWriter, clock: _Clock):
        self.info, self.cfg, self.stages, self.writer, self.clock = info, cfg, stages, writer, clock
        self.start_s: float | None = None
        self.index = 0
        self.frames: list[DecodedFrame] = []  # sampled frames of the current shot (and maybe the next)
        self.clips: list[Clip] = []

    def wants(self, time_s: float) -> bool:
        # Frames of a shot already longer than any kept clip are not worth analysing.
        return self.start_s is None or time_s - self.start_s <= self.cfg.clips.max_duration_s

    def add_frame(self, frame: DecodedFrame) -> None:
        if self.start_s is None:
            self.start_s = frame.time_s  # the first clip starts at the first frame
        if frame.image is not None:
            self.frames.append(frame)

    def close_shot(self, end_s: float) -> None:
        if self.start_s is None or end_s <= self.start_s:
            return
        clip = judge_shot(self.info.video_id, self.index, self.start_s, end_s, self.cfg.clips)
        inside = [f for f in self.frames if f.time_s < end_s]
        self.frames = [f for f in self.frames if f.time_s >= end_s]
        fields: dict[str, Any] = {}
        for stage in self.stages:
            fields.update(stage.empty_fields())
        if clip.kept:
            fields.update(self._run_stages(clip, inside))
        self.writer.add("clips", [{**clip.row(len(inside)), **fields}])
        self.clips.append(clip)
        self.index += 1
        self.start_s = end_s

    def _run_stages(self, clip: Clip, frames: list[DecodedFrame]) -> dict[str, Any]:
        ctx = ClipContext(self.info, clip, [Frame(f.index, f.time_s, f.image, f.scale) for f in frames])
        for stage in self.stages:
            result = self.clock.timed(stage.name, lambda: stage.process(ctx))
            if result.found is not None:
                replaced = np.isin(ctx.found.kind, np.unique(result.found.kind))
                ctx.found = Detections.merge([ctx.found[~replaced], result.found])
            ctx.searched.update(result.searched)
            ctx.fields.update(result.fields)
            if result.record is not None:
                ctx.records[stage.name] = result.record
            for table, rows in result.rows.items():
                self.clock.timed("write", lambda: self.writer.add(table, rows))
            if result.reject:
                clip.reject(result.reject)
                break
        return ctx.fields


def config_backends(cfg: Config) -> Backends:
    """A provider that builds each backend as the config names and sets it up (the section
    of the stage that declares the task), e.g. `config_backends(cfg).get("face_detector")`:
    what `vidpipe run` uses, so enrolment and search embed faces the same way."""
    names = cfg.stage_names()

    def options_for(task: str) -> tuple[str | None, Any]:
        owner = backend_owner(task, names)
        if owner is None:
            return None, None
        section = cfg.section(owner[0])
        return getattr(section, owner[1]), section

    return Backends(options_for, cfg.run.device, cfg.run.weights_dir, cfg.run.threads)


@dataclass
class Pipeline:
    """The configured stages with their backends, built once per worker process."""

    cfg: Config
    stages: list[Stage]
    backends: Backends

    @classmethod
    def build(cls, cfg: Config) -> "Pipeline":
        """The configured stages. Of the default stages, one whose backends have no weights
        here (e.g. bodies on a fresh machine) is left out, saying so once; a stage the
        config names must be built."""
        backends = config_backends(cfg)
        classes = stage_classes()
        stages = []
        for name in cfg.stage_names():
            try:
                stages.append(classes[name](cfg, backends))
            except NoBackendAvailable as e:
                if cfg.pipeline.stages:
                    raise
                log_once(logging.WARNING, "stage %s is off: %s", name, e)
        return cls(cfg, stages, backends)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every backend in use (those stages asked for and those backends built on), with
        its weights files, sha256 and licence: the manifest's `stages` entry."""
        return {
            task: {"name": b.name, "what": b.describe(), "weights": [describe_file(p) for p in b.weight_files]}
            for task, b in sorted(self.backends.chosen.items())
        }

    def config_hash(self) -> str:
        """What decides whether a finished video must be redone: analysis settings, stages,
        backends and the sha256 of their weights."""
        backends = {task: [d["name"], [w["sha256"] for w in d["weights"]]] for task, d in self.describe().items()}
        key = {"config": self.cfg.analysis_dict(), "stages": [s.name for s in self.stages], "backends": backends}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def manifest(self) -> Manifest:
        schemas = table_schemas(type(s) for s in self.stages)
        return Manifest(__version__, self.cfg.to_dict(), {"backends": self.describe(), "order": [s.name for s in self.stages]},
                        self.config_hash(), {t: s.names for t, s in schemas.items()})

    def model_stats(self) -> tuple[float, dict[str, int]]:
        return (sum(b.stats.seconds for b in self.backends.chosen.values()),
                {t: b.stats.calls for t, b in self.backends.chosen.items()})


class VideoProcessor:
    """Everything one worker needs to turn a video file into store rows."""

    def __init__(self, pipeline: Pipeline, out: Path):
        self.pipeline = pipeline
        self.cfg = pipeline.cfg
        self.out = Path(out)
        self.schemas = table_schemas(type(s) for s in pipeline.stages)
        self.config_hash = pipeline.config_hash()

    def process(self, path: Path, progress: Callable[[float, float], None] | None = None,
                wait: bool = False) -> VideoOutcome:
        """Process one file; never raises for a bad file (the outcome says what went wrong).
        When another process holds the video, returns status 'busy' (or waits, with `wait`)."""
        started = time.perf_counter()
        path = Path(path)
        try:
            video_id = content_id(path)
            record_path(self.out, path, video_id)
        except OSError as e:
            return VideoOutcome(str(path), None, "error", error=f"cannot read file: {e.strerror}")
        lock = VideoLock(self.out, video_id)
        if not lock.acquire(wait=wait):
            return VideoOutcome(str(path), video_id, "busy")
        try:
            done = finished(self.out, video_id)
            if done is not None and done.config_hash == self.config_hash:
                return VideoOutcome(str(path), video_id, "skipped", error=done.error)
            outcome = self._process(path, video_id, progress)
        finally:
            lock.release()
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _process(self, path: Path, video_id: str, progress) -> VideoOutcome:
        outcome = VideoOutcome(str(path), video_id, "ok")
        clock = _Clock()
        model_s0, calls0 = self.pipeline.model_stats()
        info = None
        with VideoWriter(self.out, video_id, self.schemas) as writer:
            try:
                info = probe(path, video_id)
                self._analyse(info, writer, outcome, clock, progress)
            except Exception as e:  # one bad file must not end the run (Ctrl-C still does)
                if not isinstance(e, VideoError):
                    log.debug("%s: unexpected failure", path, exc_info=True)
                    e = VideoError(f"unexpected {type(e).__name__}: {first_line(e)} (see --log-level debug)")
                writer.abort()  # a failed video keeps only its `videos` row
                outcome.status, outcome.error = "error", str(e)
                outcome.n_clips = outcome.n_clips_kept = 0
            model_s1, calls1 = self.pipeline.model_stats()
            outcome.model_seconds = model_s1 - model_s0
            outcome.model_calls = {t: n - calls0.get(t, 0) for t, n in calls1.items()}
            outcome.timings = dict(clock.seconds)  # up to here; the final write is not in the row
            writer.add("videos", [self._video_row(path, video_id, info, outcome)])
            clock.timed("write", writer.commit)
            outcome.timings = dict(clock.seconds)
            outcome.rows = {t: n for t, n in writer.rows.items() if t != "videos"}
        return outcome

    def _analyse(self, info: VideoInfo, writer: VideoWriter, outcome: VideoOutcome, clock: _Clock, progress) -> None:
        warnings: list[str] = []
        shots = ShotDetector(self.cfg.shots, info.fps)
        acc = _ShotAccumulator(info, self.cfg, self.pipeline.stages, writer, clock)
        last_t = None
        frames = iter(decode(
            info,
            small_width=self.cfg.shots.analysis_width,
            sample_fps=self.cfg.sampling.fps,
            max_side=self.cfg.sampling.max_side,
            want_sample=acc.wants,
            on_warning=warnings.append,
            threads=self.cfg.run.threads,
        ))
        while (frame := clock.timed("decode", lambda: next(frames, None))) is not None:
            for cut in clock.timed("shots", lambda: shots.push(frame)):
                acc.close_shot(cut)
            acc.add_frame(frame)
            last_t = frame.time_s
            if progress is not None:
                progress(frame.time_s - info.video_start_s, info.duration_s)
        for cut in clock.timed("shots", shots.finish):
            acc.close_shot(cut)
        frame_s = 1.0 / info.fps if info.fps > 0 else 0.0
        end_s = (last_t if last_t is not None else info.video_start_s) + frame_s
        acc.close_shot(end_s)
        if info.video_end_s - end_s > TRUNCATION_TOLERANCE_S:
            warnings.append(f"decoded {end_s - info.video_start_s:.2f} s of {info.duration_s:.2f} s (truncated file?)")
            log.warning("%s: %s", info.path.name, warnings[-1])
        outcome.warning = "; ".join(dict.fromkeys(warnings)) or None
        outcome.n_clips = len(acc.clips)
        outcome.n_clips_kept = sum(c.kept for c in acc.clips)

    def _video_row(self, path: Path, video_id: str, info: VideoInfo | None, outcome: VideoOutcome) -> dict:
        def of_info(name: str) -> Any:
            return getattr(info, name) if info is not None else None

        return dict(
            video_id=video_id,
            path=str(path.absolute()),
            size_bytes=path.stat().st_size,
            **{k: of_info(k) for k in ("duration_s", "fps", "width", "height", "rotation", "has_audio", "codec",
                                       "start_time_s", "video_start_s", "audio_start_s")},
            status=outcome.status,
            error=outcome.error,
            warning=outcome.warning,
            n_clips=outcome.n_clips,
            n_clips_kept=outcome.n_clips_kept,
            stages=[s.name for s in self.pipeline.stages],
            timings={**outcome.timings, "model": outcome.model_seconds} if outcome.status == "ok" else None,
            config_hash=self.config_hash,
            vidpipe_version=__version__,
        )
