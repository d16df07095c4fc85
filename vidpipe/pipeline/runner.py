"""One video through every stage, into the store.

A video's scan (`vidpipe.pipeline.scan`: decode, shot detection, each shot judged as a clip
with its sampled frames) runs on its own thread, a bounded number of shots ahead; the kept
clips are handed to the configured stages in batches, in order, and their rows go to the
store writer. In a serial run the next file's scan starts while this one's last clips are in
the stages. A long video may be processed in time ranges (`vidpipe.pipeline.spans`,
`vidpipe.ranges`). The runner knows no stage by name: it loops over `Stage` objects and
applies their `StageResult`s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vidpipe._version import __version__
from vidpipe.backends.base import Detections
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline.scan import Clock, Scan, ScanAhead, Shot, file_stamp
from vidpipe.pipeline.spans import SpanWatch, plan_spans
from vidpipe.pipeline.stage import ClipContext, Frame, Stage, StageResult, backend_owner, check_order, stage_classes
from vidpipe.registry import Backends, NoBackendAvailable, log_once
from vidpipe.store import (
    Manifest, VideoLock, VideoWriter, finished, forget_unreadable, record_error, record_path, table_schemas,
)
from vidpipe.util import first_line
from vidpipe.video import VideoError, VideoInfo, content_id, file_problem
from vidpipe.weights import describe_file

log = logging.getLogger("vidpipe")

@dataclass
class VideoOutcome:
    """What happened to one input file."""

    path: str
    video_id: str | None
    # 'ok' | 'error' | 'skipped' (done before, same content and config) | 'busy' (another process has it)
    # | 'split' (a long video: process its `spans`, then merge) | 'range' (one of those processed)
    status: str
    error: str | None = None
    warning: str | None = None
    n_clips: int = 0
    n_clips_kept: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows written per table
    seconds: float = 0.0  # wall time spent on it
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per part: decode, shots, <stage>, write
    model_seconds: float = 0.0  # pure inference time of every network call
    model_calls: dict[str, int] = field(default_factory=dict)  # network calls per backend task
    spans: list[Any] = field(default_factory=list)  # status 'split': the time ranges to process (vidpipe.ranges)


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
        if cfg.pipeline.stages and (why := check_order([classes[n] for n in cfg.stage_names()])):
            raise ConfigError(why)
        stages: list[Stage] = []
        for name in cfg.stage_names():
            missing = [r for r in classes[name].requires if not any(r in s.provides for s in stages)]
            if missing:  # only of the default stages: a stage it needs is off here
                log_once(logging.WARNING, "stage %s is off: it needs %s, and no stage on provides it", name,
                         " and ".join(missing))
                continue
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
    """Everything one worker needs to turn a video file into store rows.

    Videos longer than 1.5 x `split_s` (0: never) come back from `process` with status
    'split' and their time ranges (`vidpipe.ranges`), to be processed as separate items by
    any worker and merged."""

    def __init__(self, pipeline: Pipeline, out: Path, split_s: float = 0.0, scans: ScanAhead | None = None):
        self.pipeline = pipeline
        self.cfg = pipeline.cfg
        self.out = Path(out)
        self.split_s = split_s
        self.schemas = table_schemas(type(s) for s in pipeline.stages)
        self.config_hash = pipeline.config_hash()
        self.scans = scans or ScanAhead(self.cfg, self.out)
        self.scans.config_hash = self.config_hash

    def process(self, path: Path, progress: Callable[[float, float], None] | None = None,
                wait: bool = False) -> VideoOutcome:
        """Process one file; never raises for a bad file (the outcome says what went wrong).
        When another process holds the video, returns status 'busy' (or waits, with `wait`)."""
        started = time.perf_counter()
        path = Path(path)
        scan = self.scans.claim(path)  # its decode may have started while the file before was in the stages
        try:
            try:
                if (problem := file_problem(path)) is not None:
                    raise VideoError(problem)
                if scan is not None and scan.stamp != file_stamp(path):  # changed since: start again
                    scan.close()
                    scan = None
                video_id = scan.video_id if scan is not None else content_id(path)
                record_path(self.out, path, video_id)
            except (OSError, VideoError) as e:
                error = str(e) if isinstance(e, VideoError) else f"cannot read file: {e.strerror}"
                return VideoOutcome(str(path), record_error(self.out, path, error, self.config_hash), "error",
                                    error=error)
            forget_unreadable(self.out, path)
            lock = VideoLock(self.out, video_id)
            if not lock.acquire(wait=wait):
                return VideoOutcome(str(path), video_id, "busy")
            try:
                done = finished(self.out, video_id, self.schemas)  # a file of it that cannot be read: redo it
                if done is not None and done.config_hash == self.config_hash:
                    return VideoOutcome(str(path), video_id, "skipped", error=done.error)
                spans = plan_spans(path, video_id, self.cfg, self.split_s)
                if spans:
                    return VideoOutcome(str(path), video_id, "split", spans=spans)
                scan = scan or self.scans.scan(path, video_id)
                self.scans.in_process(scan)
                outcome = self.process_into(path, video_id, progress, scan=scan)
            finally:
                lock.release()
        finally:
            if scan is not None:
                scan.close()
        outcome.seconds = time.perf_counter() - started
        return outcome

    def process_into(self, path: Path, video_id: str, progress, watch: SpanWatch | None = None,
                     out: Path | None = None, scan: Scan | None = None) -> VideoOutcome:
        """Analyse the video (or with `watch`, the shots of one time range) into the store at
        `out` (default: the run's store), committed atomically; from `scan` when its decode
        has started already."""
        outcome = VideoOutcome(str(path), video_id, "ok")
        clock = Clock()
        model_s0, calls0 = self.pipeline.model_stats()
        info = None
        scan = scan or Scan(self.cfg, path, video_id, watch)
        scan.attach(progress)
        with VideoWriter(out or self.out, video_id, self.schemas) as writer:
            try:
                info = scan.info()
                self._analyse(info, scan, writer, outcome, clock)
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
            writer.add("videos", [self.video_row(path, video_id, info, outcome)])
            clock.timed("write", writer.commit)
            outcome.timings = dict(clock.seconds)
            outcome.rows = {t: n for t, n in writer.rows.items() if t != "videos"}
        scan.close()
        return outcome

    def _analyse(self, info: VideoInfo, scan: Scan, writer: VideoWriter, outcome: VideoOutcome,
                 clock: Clock) -> None:
        """Stages on batches of kept clips, up to `run.batch_frames` sampled frames each (so
        detectors fill their network batches across clips); rows are written in shot order,
        exactly as one clip at a time would write them. The decode runs `run.decode_ahead`
        shots ahead on its own thread (its own clock too: the two overlap)."""
        pending: list[Shot] = []
        frames = 0
        for shot in scan.shots():
            if not shot.clip.kept:
                shot = Shot(shot.clip, [], len(shot.frames))  # nothing looks at its frames
            pending.append(shot)
            frames += len(shot.frames)
            if frames >= self.cfg.run.batch_frames:
                self._write_batch(info, pending, writer, outcome, clock)
                pending, frames = [], 0
        self._write_batch(info, pending, writer, outcome, clock)
        for part, seconds in scan.clock.seconds.items():
            clock.seconds[part] += seconds
        outcome.warning = "; ".join(dict.fromkeys(scan.warnings)) or None

    def _write_batch(self, info: VideoInfo, shots: list[Shot], writer: VideoWriter, outcome: VideoOutcome,
                     clock: Clock) -> None:
        """Run the stages on the kept clips of `shots`, then write every shot's rows in order."""
        kept = [shot for shot in shots if shot.clip.kept]
        contexts = [ClipContext(info, shot.clip, [Frame(f.index, f.time_s, f.image, f.scale) for f in shot.frames])
                    for shot in kept]
        rows = self._run_stages(contexts, clock)
        by_clip = {id(shot.clip): (ctx, r) for shot, ctx, r in zip(kept, contexts, rows)}
        for shot in shots:
            fields: dict[str, Any] = {}
            for stage in self.pipeline.stages:
                fields.update(stage.empty_fields())
            if id(shot.clip) in by_clip:  # it reached the stages (one may have rejected it)
                ctx, stage_rows = by_clip[id(shot.clip)]
                fields.update(ctx.fields)
                for table, columns in stage_rows:
                    clock.timed("write", lambda: writer.add(table, columns))
            writer.add("clips", [{**shot.clip.row(shot.n_frames), **fields}])
            outcome.n_clips += 1
            outcome.n_clips_kept += shot.clip.kept

    def _run_stages(self, contexts: list[ClipContext], clock: Clock) -> list[list[tuple[str, dict[str, Any]]]]:
        """Each stage in order on the clips no earlier stage rejected; the stages' rows of
        each clip, (table, columns) in stage order."""
        rows: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in contexts]
        alive = list(range(len(contexts)))
        for stage in self.pipeline.stages:
            if not alive:
                break
            batch = [contexts[i] for i in alive]
            results = clock.timed(stage.name, lambda: stage.process_batch(batch))
            if len(results) != len(batch):
                raise RuntimeError(f"stage {stage.name} gave {len(results)} results for {len(batch)} clips")
            still = []
            for i, result in zip(alive, results):
                self._apply(stage, contexts[i], result)
                rows[i].extend(result.rows.items())
                if result.reject:
                    contexts[i].clip.reject(result.reject)
                else:
                    still.append(i)
            alive = still
        return rows

    @staticmethod
    def _apply(stage: Stage, ctx: ClipContext, result: StageResult) -> None:
        """What a stage found goes into the clip's record, for the stages after it."""
        if result.found is not None:
            replaced = np.isin(ctx.found.kind, np.unique(result.found.kind))
            ctx.found = Detections.merge([ctx.found[~replaced], result.found])
        ctx.searched.update(result.searched)
        ctx.fields.update(result.fields)
        if result.record is not None:
            ctx.records[stage.name] = result.record

    def video_row(self, path: Path, video_id: str, info: VideoInfo | None, outcome: VideoOutcome) -> dict:
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
