"""One video through every stage, into the store.

The decode loop streams frames: each frame feeds the shot detector; sampled frames of the
current shot are held until its end is known. Then the shot is judged as a clip and, when
kept, handed to the configured stages in order; their rows go to the store writer. The
decode loop runs on its own thread, a bounded number of shots ahead of the stages, so the
models never wait for the decoder. Nothing grows with video length: a few shots' sampled
frames at most are held (of a shot longer than any kept clip, only its first frames). A
long video may be processed in time ranges (`vidpipe.pipeline.spans`, `vidpipe.ranges`). The runner knows no stage by
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
from typing import Any, Callable, Iterator

import numpy as np

from vidpipe._version import __version__
from vidpipe.backends.base import Detections
from vidpipe.config import ClipsConfig, Config, ConfigError
from vidpipe.pipeline.ahead import run_ahead
from vidpipe.pipeline.clips import Clip, judge_shot
from vidpipe.pipeline.shots import ShotDetector
from vidpipe.pipeline.spans import SpanWatch, plan_spans
from vidpipe.pipeline.stage import ClipContext, Frame, Stage, StageResult, backend_owner, check_order, stage_classes
from vidpipe.registry import Backends, NoBackendAvailable, log_once
from vidpipe.store import (
    Manifest, VideoLock, VideoWriter, finished, forget_unreadable, record_error, record_path, table_schemas,
)
from vidpipe.util import first_line
from vidpipe.video import DecodedFrame, VideoError, VideoInfo, content_id, decode, file_problem, probe
from vidpipe.weights import describe_file

log = logging.getLogger("vidpipe")

# A decode that ends this much before the stream's stated duration is reported.
TRUNCATION_TOLERANCE_S = 1.0


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


@dataclass
class _Shot:
    """A shot whose end is known: judged as a clip, with its sampled frames."""

    clip: Clip
    frames: list[DecodedFrame]
    n_sampled: int | None = None  # frames sampled, when `frames` was let go

    @property
    def n_frames(self) -> int:
        return len(self.frames) if self.n_sampled is None else self.n_sampled


class _ShotAccumulator:
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

    def close_shot(self, end_s: float) -> _Shot | None:
        if self.start_s is None or end_s <= self.start_s:
            return None
        clip = judge_shot(self.video_id, self.index, self.start_s, end_s, self.cfg)
        inside = [f for f in self.frames if f.time_s < end_s]
        self.frames = [f for f in self.frames if f.time_s >= end_s]
        self.index += 1
        self.start_s = end_s
        return _Shot(clip, inside)


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

    def __init__(self, pipeline: Pipeline, out: Path, split_s: float = 0.0):
        self.pipeline = pipeline
        self.cfg = pipeline.cfg
        self.out = Path(out)
        self.split_s = split_s
        self.schemas = table_schemas(type(s) for s in pipeline.stages)
        self.config_hash = pipeline.config_hash()

    def process(self, path: Path, progress: Callable[[float, float], None] | None = None,
                wait: bool = False) -> VideoOutcome:
        """Process one file; never raises for a bad file (the outcome says what went wrong).
        When another process holds the video, returns status 'busy' (or waits, with `wait`)."""
        started = time.perf_counter()
        path = Path(path)
        try:
            if (problem := file_problem(path)) is not None:
                raise VideoError(problem)
            video_id = content_id(path)
            record_path(self.out, path, video_id)
        except (OSError, VideoError) as e:
            error = str(e) if isinstance(e, VideoError) else f"cannot read file: {e.strerror}"
            return VideoOutcome(str(path), record_error(self.out, path, error, self.config_hash), "error", error=error)
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
            outcome = self.process_into(path, video_id, progress)
        finally:
            lock.release()
        outcome.seconds = time.perf_counter() - started
        return outcome

    def process_into(self, path: Path, video_id: str, progress, watch: SpanWatch | None = None,
                 out: Path | None = None) -> VideoOutcome:
        """Analyse the video (or with `watch`, the shots of one time range) into the store at
        `out` (default: the run's store), committed atomically."""
        outcome = VideoOutcome(str(path), video_id, "ok")
        clock = _Clock()
        model_s0, calls0 = self.pipeline.model_stats()
        info = None
        with VideoWriter(out or self.out, video_id, self.schemas) as writer:
            try:
                info = probe(path, video_id)
                self._analyse(info, writer, outcome, clock, progress, watch)
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
        return outcome

    def _analyse(self, info: VideoInfo, writer: VideoWriter, outcome: VideoOutcome, clock: _Clock, progress,
                 watch: SpanWatch | None = None) -> None:
        """Stages on batches of kept clips, up to `run.batch_frames` sampled frames each (so
        detectors fill their network batches across clips); rows are written in shot order,
        exactly as one clip at a time would write them. The decode runs `run.decode_ahead`
        shots ahead on its own thread (its own clock too: the two overlap)."""
        warnings: list[str] = []
        scan_clock = _Clock()
        shots = self._shots(info, scan_clock, warnings, progress, watch)
        pending: list[_Shot] = []
        frames = 0
        for shot in run_ahead(shots, self.cfg.run.decode_ahead):
            if not shot.clip.kept:
                shot = _Shot(shot.clip, [], len(shot.frames))  # nothing looks at its frames
            pending.append(shot)
            frames += len(shot.frames)
            if frames >= self.cfg.run.batch_frames:
                self._write_batch(info, pending, writer, outcome, clock)
                pending, frames = [], 0
        self._write_batch(info, pending, writer, outcome, clock)
        for part, seconds in scan_clock.seconds.items():
            clock.seconds[part] += seconds
        outcome.warning = "; ".join(dict.fromkeys(warnings)) or None

    def _write_batch(self, info: VideoInfo, shots: list[_Shot], writer: VideoWriter, outcome: VideoOutcome,
                     clock: _Clock) -> None:
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

    def _shots(self, info: VideoInfo, clock: _Clock, warnings: list[str], progress,
               watch: SpanWatch | None) -> Iterator[_Shot]:
        """Decode -> shot detection -> each shot with its sampled frames, in order. With
        `watch`, only the shots of one time range: from the cut where it starts to the cut
        where the next one does (`vidpipe.pipeline.spans`)."""
        if watch is not None:
            watch.bind(info, self.cfg.shots)
        shots = ShotDetector(self.cfg.shots, info.fps, origin_s=watch.origin_s if watch else None)
        acc = _ShotAccumulator(info.video_id, self.cfg.clips, shots.lag_frames)
        frames = iter(decode(
            info,
            small_width=self.cfg.shots.analysis_width,
            sample_fps=self.cfg.sampling.fps,
            max_side=self.cfg.sampling.max_side,
            on_warning=warnings.append,
            threads=self.cfg.run.threads,
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

    def _run_stages(self, contexts: list[ClipContext], clock: _Clock) -> list[list[tuple[str, dict[str, Any]]]]:
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
