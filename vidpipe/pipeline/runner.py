"""One video through every stage, into the store.

The decode loop streams frames: each frame feeds the shot detector; sampled frames are
batched to the face stage as they come. When a cut is known the finished shot is judged
as a clip and its rows go to the store writer, so nothing grows with video length.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vidpipe import __version__
from vidpipe.config import Config
from vidpipe.pipeline.clips import Clip, judge_shot
from vidpipe.pipeline.faces import FaceStage, FrameFaces, rank_faces
from vidpipe.pipeline.shots import ShotDetector
from vidpipe.store import VideoWriter, finished
from vidpipe.video import DecodedFrame, VideoError, VideoInfo, content_id, decode, probe

log = logging.getLogger("vidpipe")

# A decode that ends this much before the container's stated duration is reported.
TRUNCATION_TOLERANCE_S = 1.0


@dataclass
class VideoOutcome:
    """What happened to one input file."""

    path: str
    video_id: str | None
    status: str  # 'ok' | 'error' | 'skipped' (done before with the same content and config)
    error: str | None = None
    warning: str | None = None
    n_clips: int = 0
    n_clips_kept: int = 0
    n_faces: int = 0
    seconds: float = 0.0  # wall time spent on it


class _ShotAccumulator:
    """Holds the sampled frames of the current shot; when its end is known, judges it as a
    clip, runs the face stage on kept clips only, and hands the rows to the writer.

    At most `max_duration_s * sample_fps` frames are held (frames of longer shots are not
    sampled), so memory is bounded by the longest clip, not by the video."""

    def __init__(self, info: VideoInfo, cfg: Config, stage: FaceStage, writer: VideoWriter):
        self.info, self.cfg, self.stage, self.writer = info, cfg, stage, writer
        self.start_s = 0.0
        self.index = 0
        self.frames: list[DecodedFrame] = []  # sampled frames of the current shot (and maybe the next)
        self.clips: list[Clip] = []
        self.n_faces = 0

    def wants(self, time_s: float) -> bool:
        # Frames of a shot already longer than any kept clip are not worth analysing.
        return time_s - self.start_s <= self.cfg.clips.max_duration_s

    def add_frame(self, frame: DecodedFrame) -> None:
        if frame.image is not None:
            self.frames.append(frame)

    def _faces(self, frames: list[DecodedFrame]) -> list[FrameFaces]:
        batch = self.cfg.faces.batch_size
        return [faces for i in range(0, len(frames), batch) for faces in self.stage(frames[i : i + batch])]

    def close_shot(self, end_s: float) -> None:
        if end_s <= self.start_s:
            return
        clip = judge_shot(self.info.video_id, self.index, self.start_s, end_s, self.cfg.clips)
        inside = [f for f in self.frames if f.time_s < end_s]
        self.frames = [f for f in self.frames if f.time_s >= end_s]
        n_sampled = len(inside)
        faces = self._faces(inside) if clip.kept else []
        ranked = rank_faces(faces, self.cfg.faces.top_k, self.stage.backend.embedding_dim)
        self.writer.add(
            "clips",
            [
                dict(
                    clip_id=clip.clip_id,
                    video_id=clip.video_id,
                    shot_index=clip.shot_index,
                    start_s=clip.start_s,
                    end_s=clip.end_s,
                    duration_s=clip.duration_s,
                    status=clip.status,
                    reason=clip.reason,
                    n_frames_sampled=n_sampled,
                    n_faces=len(ranked),
                )
            ],
        )
        self.writer.add(
            "faces",
            [
                dict(
                    clip_id=clip.clip_id,
                    video_id=clip.video_id,
                    frame_index=int(ranked.frame_index[i]),
                    time_s=float(ranked.time_s[i]),
                    bbox=ranked.boxes[i].tolist(),
                    landmarks=ranked.landmarks[i].reshape(-1).tolist(),
                    det_score=float(ranked.scores[i]),
                    quality=float(ranked.quality[i]),
                    embedding=ranked.embeddings[i].tolist(),
                    rank=int(ranked.rank[i]),
                    selected=bool(ranked.selected[i]),
                )
                for i in range(len(ranked))
            ],
        )
        self.clips.append(clip)
        self.n_faces += len(ranked)
        self.index += 1
        self.start_s = end_s


class VideoProcessor:
    """Everything one worker needs to turn a video file into store rows."""

    def __init__(self, cfg: Config, out: Path, stage: FaceStage, config_hash: str):
        self.cfg = cfg
        self.out = Path(out)
        self.stage = stage
        self.config_hash = config_hash

    def process(self, path: Path, progress: Callable[[float, float], None] | None = None) -> VideoOutcome:
        """Process one file; never raises for a bad file (the outcome says what went wrong)."""
        started = time.perf_counter()
        path = Path(path)
        try:
            video_id = content_id(path)
        except OSError as e:
            return VideoOutcome(str(path), None, "error", error=f"cannot read file: {e.strerror}")
        done = finished(self.out, video_id)
        if done is not None and done.config_hash == self.config_hash:
            return VideoOutcome(str(path), video_id, "skipped", error=done.error)
        outcome = VideoOutcome(str(path), video_id, "ok")
        info = None
        with VideoWriter(self.out, video_id) as writer:
            try:
                info = probe(path, video_id)
                self._analyse(info, writer, outcome, progress)
            except Exception as e:  # one bad file must not end the run (Ctrl-C still does)
                if not isinstance(e, VideoError):
                    log.debug("%s: unexpected failure", path, exc_info=True)
                    first_line = (str(e).strip().splitlines() or [""])[0]
                    e = VideoError(f"unexpected {type(e).__name__}: {first_line} (see --log-level debug)")
                writer.abort()  # a failed video keeps only its `videos` row
                outcome.status, outcome.error = "error", str(e)
                outcome.n_clips = outcome.n_clips_kept = outcome.n_faces = 0
            writer.add("videos", [self._video_row(path, video_id, info, outcome)])
            writer.commit()
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _analyse(self, info: VideoInfo, writer: VideoWriter, outcome: VideoOutcome, progress) -> None:
        warnings: list[str] = []
        shots = ShotDetector(self.cfg.shots, info.fps)
        acc = _ShotAccumulator(info, self.cfg, self.stage, writer)
        last_t = 0.0
        frames = decode(
            info,
            small_width=self.cfg.shots.analysis_width,
            sample_fps=self.cfg.faces.sample_fps,
            max_side=self.cfg.faces.max_side,
            want_sample=acc.wants,
            on_warning=warnings.append,
        )
        for frame in frames:
            for cut in shots.push(frame.pts, frame.time_base, frame.small):
                acc.close_shot(cut)
            acc.add_frame(frame)
            last_t = frame.time_s
            if progress is not None:
                progress(frame.time_s, info.duration_s)
        for cut in shots.finish():
            acc.close_shot(cut)
        frame_s = 1.0 / info.fps if info.fps > 0 else 0.0
        end_s = last_t + frame_s
        acc.close_shot(end_s)
        if info.duration_s - end_s > TRUNCATION_TOLERANCE_S:
            warnings.append(f"decoded {end_s:.2f} s of {info.duration_s:.2f} s (truncated file?)")
            log.warning("%s: %s", info.path.name, warnings[-1])
        outcome.warning = "; ".join(dict.fromkeys(warnings)) or None
        outcome.n_clips = len(acc.clips)
        outcome.n_clips_kept = sum(c.kept for c in acc.clips)
        outcome.n_faces = acc.n_faces

    def _video_row(self, path: Path, video_id: str, info: VideoInfo | None, outcome: VideoOutcome) -> dict:
        return dict(
            video_id=video_id,
            path=str(path.resolve()),
            size_bytes=path.stat().st_size,
            duration_s=info.duration_s if info else None,
            fps=info.fps if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            rotation=info.rotation if info else None,
            has_audio=info.has_audio if info else None,
            codec=info.codec if info else None,
            status=outcome.status,
            error=outcome.error,
            warning=outcome.warning,
            n_clips=outcome.n_clips,
            n_clips_kept=outcome.n_clips_kept,
            n_faces=outcome.n_faces,
            face_backend=self.stage.backend.name,
            config_hash=self.config_hash,
            vidpipe_version=__version__,
        )
