"""Faces: detect, align and embed on sampled frames; rank a clip's faces by quality.

Quality is the L2 norm of the raw embedding (iQIYI-VID §5.1, after Ranjan et al.): blurred,
side and misdetected faces have small norms. The top `top_k` (32) faces by quality are the
ones the papers feed to the fusion model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vidpipe.backends.base import FaceBackend
from vidpipe.config import FacesConfig
from vidpipe.video import DecodedFrame


@dataclass
class FrameFaces:
    """The faces of one frame, in source (displayed) pixels."""

    frame_index: int
    time_s: float
    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32
    embeddings: np.ndarray  # (n, D) float32, raw (un-normalised)

    def __len__(self) -> int:
        return len(self.scores)


class FaceStage:
    """Sampled frames in, faces with raw embeddings out. Batched: one call per batch of frames."""

    def __init__(self, backend: FaceBackend, cfg: FacesConfig):
        self.backend = backend
        self.cfg = cfg

    def __call__(self, frames: Sequence[DecodedFrame]) -> list[FrameFaces]:
        images = [f.image for f in frames]
        detections = self.backend.detect(images)
        kept = []
        for frame, det in zip(frames, detections):
            short_side = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
            keep = (det.scores >= self.cfg.det_threshold) & (short_side * frame.scale >= self.cfg.min_face_px)
            kept.append(det.select(keep))
        embeddings = self.backend.embed(images, kept)
        out = []
        for frame, det, emb in zip(frames, kept, embeddings):
            landmarks = det.landmarks if det.landmarks is not None else np.zeros((len(det), 5, 2), np.float32)
            out.append(
                FrameFaces(
                    frame_index=frame.index,
                    time_s=frame.time_s,
                    boxes=(det.boxes * frame.scale).astype(np.float32),
                    scores=det.scores.astype(np.float32),
                    landmarks=(landmarks * frame.scale).astype(np.float32),
                    embeddings=np.asarray(emb, np.float32).reshape(len(det), self.backend.embedding_dim),
                )
            )
        return out


@dataclass
class RankedFaces:
    """A clip's faces as columns, best quality first."""

    frame_index: np.ndarray  # (n,) int32
    time_s: np.ndarray  # (n,) float64
    boxes: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32
    quality: np.ndarray  # (n,) float32: L2 norm of the raw embedding
    embeddings: np.ndarray  # (n, D) float32, L2-normalised
    rank: np.ndarray  # (n,) int32, 0 = best
    selected: np.ndarray  # (n,) bool: rank < top_k

    def __len__(self) -> int:
        return len(self.rank)


def rank_faces(faces: Sequence[FrameFaces], top_k: int, dim: int) -> RankedFaces:
    """Order a clip's faces by quality and mark the top `top_k`."""
    faces = [f for f in faces if len(f)]
    if faces:
        raw = np.concatenate([f.embeddings for f in faces])
        frame_index = np.concatenate([np.full(len(f), f.frame_index, np.int32) for f in faces])
        time_s = np.concatenate([np.full(len(f), f.time_s, np.float64) for f in faces])
        boxes = np.concatenate([f.boxes for f in faces])
        scores = np.concatenate([f.scores for f in faces])
        landmarks = np.concatenate([f.landmarks for f in faces])
    else:
        raw = np.zeros((0, dim), np.float32)
        frame_index, time_s = np.zeros(0, np.int32), np.zeros(0, np.float64)
        boxes, scores, landmarks = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    quality = np.linalg.norm(raw, axis=1).astype(np.float32)
    # Stable sort: equal quality keeps time order, so reruns give identical ranks.
    order = np.argsort(-quality, kind="stable")
    normalised = raw / np.maximum(quality[:, None], 1e-12)
    rank = np.arange(len(order), dtype=np.int32)
    return RankedFaces(
        frame_index=frame_index[order],
        time_s=time_s[order],
        boxes=boxes[order],
        scores=scores[order],
        landmarks=landmarks[order],
        quality=quality[order],
        embeddings=normalised[order].astype(np.float32),
        rank=rank,
        selected=rank < top_k,
    )
