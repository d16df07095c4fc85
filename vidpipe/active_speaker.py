"""Active speaker: is a face on screen the voice we hear?

iQIYI-VID §6.4 blames audio's 11.79% MAP on clips where "the sound may likely not come from
the person of interest". An active-speaker model (Light-ASD by default) scores a face track
at 25 fps against the clip's audio: one logit per frame, speaking > 0.

A track comes from the face detections the run already has (4 fps): boxes are interpolated
between detections (never across a gap longer than `max_gap_s`), held for one sampling
period next to a detection, and median-filtered over 13 frames (0.5 s) as upstream
Light-ASD filters its per-frame boxes (steadier crops: the Hamilton performer's mean logit
is 2.2 with the filter, 1.7 without); the 25 fps pictures come from one `decode_range`
pass, cropped as they stream, so a clip never holds more than its small face crops.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vidpipe.audio import SAMPLE_RATE, AudioReader
from vidpipe.backends.base import FACE, ActiveSpeakerScorer, Detections
from vidpipe.records import FaceTrack, SpeakingScores  # noqa: F401  (the asd stage's records)
from vidpipe.video import VideoInfo, decode_range, probe

if TYPE_CHECKING:
    from vidpipe.config import Config


def grid_times(start_s: float, end_s: float, fps: float) -> np.ndarray:
    """start_s + k / fps for k = 0, 1, … while < end_s (what `decode_range` yields)."""
    n = max(0, int(np.ceil((end_s - start_s) * fps - 1e-6)))
    return start_s + np.arange(n) / fps


def _median_runs(values: np.ndarray, joined: np.ndarray, size: int) -> np.ndarray:
    """Median filter of each column over each run of rows (`joined[i]`: row i continues the
    run of row i - 1), edges held."""
    from scipy.ndimage import median_filter

    out = values.copy()
    starts = np.r_[np.flatnonzero(~joined[1:]) + 1] if len(values) > 1 else np.zeros(0, int)
    for a, b in zip(np.r_[0, starts], np.r_[starts, len(values)]):
        out[a:b] = median_filter(values[a:b], size=(min(size, b - a), 1), mode="nearest")
    return out


def follow(times: np.ndarray, boxes: np.ndarray, grid: np.ndarray, max_gap_s: float = 1.0,
           hold_s: float = 0.25, smooth_frames: int = 13) -> FaceTrack:
    """A face's boxes at `grid` times from its detections (`times`, `boxes`, any order):
    centre and size interpolated between detections at most `max_gap_s` apart, held up to
    `hold_s` from the nearest one elsewhere, then median-filtered over `smooth_frames` grid
    frames, as upstream filters its per-frame boxes; NaN beyond."""
    order = np.argsort(times)
    t, b = np.asarray(times, np.float64)[order], np.asarray(boxes, np.float64).reshape(-1, 4)[order]
    out = np.full((len(grid), 4), np.nan)
    if not len(t):
        return FaceTrack(grid, out)
    # Centre and half-size, as upstream Light-ASD follows faces (x, y, s = max side / 2).
    geo = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2], 1)
    j = np.searchsorted(t, grid, side="right")  # detections at or before each grid time: t[j-1]
    before, after = np.clip(j - 1, 0, len(t) - 1), np.clip(j, 0, len(t) - 1)
    inside = (j > 0) & (j < len(t)) & (t[after] - t[before] <= max_gap_s)
    hold_before = ~inside & (j > 0) & (grid - t[before] <= hold_s)  # just after a detection
    hold_after = ~inside & ~hold_before & (j < len(t)) & (t[after] - grid <= hold_s)  # just before one
    valid = inside | hold_before | hold_after
    span = np.where(t[after] > t[before], t[after] - t[before], 1.0)
    w = np.clip((grid - t[before]) / span, 0, 1)[:, None]
    g = (1 - w) * geo[before] + w * geo[after]
    g[hold_before] = geo[before[hold_before]]
    g[hold_after] = geo[after[hold_after]]
    g[valid] = _median_runs(g[valid], np.diff(np.r_[-2, np.flatnonzero(valid)]) == 1, smooth_frames)
    out[valid] = np.stack([g[:, 0] - g[:, 2], g[:, 1] - g[:, 2], g[:, 0] + g[:, 2], g[:, 1] + g[:, 2]], 1)[valid]
    return FaceTrack(grid, out)


def crop_tracks(info: VideoInfo, tracks: Sequence[FaceTrack], scorer: ActiveSpeakerScorer,
                threads: int = 0) -> list[np.ndarray]:
    """(T, h, w) uint8 crops of every track (all on the same grid), from one decode of the
    range; frames where a track is not followed get a blank crop (they are not scored)."""
    if not tracks:
        return []
    grid = tracks[0].times
    crops: list[np.ndarray | None] = [None] * len(tracks)
    if not len(grid):
        return [np.zeros((0, 112, 112), np.uint8) for _ in tracks]
    step = 1.0 / scorer.fps
    for k, (_, gray) in enumerate(decode_range(info, grid[0], grid[-1] + step / 2, scorer.fps, gray=True, threads=threads)):
        if k >= len(grid):
            break
        for i, track in enumerate(tracks):
            if not track.followed[k]:
                continue
            face = scorer.crop(gray, track.boxes[k])
            if crops[i] is None:
                crops[i] = np.zeros((len(grid), *face.shape), np.uint8)
            crops[i][k] = face
    return [c if c is not None else np.zeros((len(grid), 1, 1), np.uint8) for c in crops]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def score_tracks(scorer: ActiveSpeakerScorer, samples: np.ndarray, tracks: Sequence[FaceTrack],
                 crops: Sequence[np.ndarray], min_frames: int = 5) -> list[SpeakingScores]:
    """Logits of each track against `samples` (16 kHz, starting at the grid's first time):
    each run of followed frames (at least `min_frames` long) is one input of one batch."""
    per_frame = SAMPLE_RATE / scorer.fps
    inputs, where = [], []
    for i, (track, crop) in enumerate(zip(tracks, crops)):
        for a, b in runs(track.followed):
            if b - a >= min_frames:
                inputs.append((samples[round(a * per_frame) : round(b * per_frame)], crop[a:b]))
                where.append((i, a, b))
    results = [SpeakingScores(t, np.full(len(t.times), np.nan, np.float32)) for t in tracks]
    for (i, a, b), logits in zip(where, scorer.score(inputs) if inputs else []):
        results[i].logits[a : a + len(logits)] = logits[: b - a]
    return results


def link_faces(faces: Detections, times: np.ndarray, min_iou: float = 0.3, max_gap_s: float = 1.0) -> list[np.ndarray]:
    """Faces of consecutive sampled frames linked into tracks (greedy, by IoU with each
    track's last box, as upstream Light-ASD links its detections): row indices per track."""
    tracks: list[list[int]] = []
    for f in np.unique(faces.frame):
        rows = np.flatnonzero(faces.frame == f)
        free = set(rows.tolist())
        live = [tr for tr in tracks if times[f] - times[faces.frame[tr[-1]]] <= max_gap_s]
        for tr in sorted(live, key=lambda tr: -faces.area[tr[-1]]):
            if not free:
                break
            cand = sorted(free)
            ious = [_iou(faces.xyxy[tr[-1]], faces.xyxy[r]) for r in cand]
            best = int(np.argmax(ious))
            if ious[best] >= min_iou:
                tr.append(cand[best])
                free.discard(cand[best])
        tracks.extend([r] for r in sorted(free))
    return [np.array(tr) for tr in tracks]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ---------------------------------------------------------------- Python API

def score_active_speakers(video: str | os.PathLike[str], start_s: float, end_s: float,
                          config: "Config | None" = None, audio_offset_s: float = 0.0,
                          min_detections: int = 3) -> list[SpeakingScores]:
    """Who speaks in [start_s, end_s) of a video (presentation timeline, as the `clips`
    table gives): every face found there (the configured face detector, at the sampling
    rate) is followed and scored against the audio. Returns one `SpeakingScores` per face
    found in at least `min_detections` sampled frames (fewer: a flaky detection, not a
    face to follow), largest face first. `audio_offset_s` reads the audio
    that much later than the frames (to check that sync matters)."""
    from vidpipe.config import Config
    from vidpipe.pipeline.runner import config_backends

    cfg = config or Config()
    backends = config_backends(cfg)
    detector, scorer = backends.get("face_detector"), backends.get("active_speaker")
    info = probe(video)
    options = cfg.section("asd")
    times, images, scales = [], [], []
    for t, image in decode_range(info, start_s, end_s, cfg.sampling.fps, max_side=cfg.sampling.max_side,
                                 threads=cfg.run.threads):
        times.append(t)
        images.append(image)
        scales.append(max(info.width, info.height) / max(image.shape[:2]))
    faces = detector.detect(images) if images else Detections.empty()
    faces = faces[(faces.kind == FACE) & (faces.confidence >= cfg.faces.det_threshold)]
    times = np.asarray(times)
    grid = grid_times(start_s, end_s, scorer.fps)
    tracks = []
    for rows in link_faces(faces, times):
        if len(rows) < min_detections:
            continue
        boxes = faces.xyxy[rows] * np.asarray(scales)[faces.frame[rows], None]
        tracks.append(follow(times[faces.frame[rows]], boxes, grid, options.max_gap_s,
                             1 / cfg.sampling.fps, options.smooth_frames))
    tracks.sort(key=lambda tr: -np.nanmean((tr.boxes[:, 2] - tr.boxes[:, 0]) * (tr.boxes[:, 3] - tr.boxes[:, 1])))
    with AudioReader(info.path, info.start_time_s) as reader:
        samples = reader.read(start_s + audio_offset_s, end_s + audio_offset_s)
    crops = crop_tracks(info, tracks, scorer, cfg.run.threads)
    return score_tracks(scorer, samples, tracks, crops)
