"""Faces: detect, align and embed on the sampled frames; rank the major character's faces.

Quality is the L2 norm of the raw embedding (iQIYI-VID §5.1, after Ranjan et al.): blurred,
side and misdetected faces have small norms. The top `top_k` (32) faces of the major
character by quality are the ones the papers feed to the fusion model. Every face is
embedded (search and library tagging want everyone); `major` marks the major character's
face in each valid frame: the face inside the major head. Without the major-character
stage every face is ranked, and `major` is null.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vidpipe.backends.base import FACE, HEAD, Detections
from vidpipe.pipeline.stage import DETECTION_FIELDS, F32_LIST, ClipContext, Stage, StageResult, detect_across, register_stage


@dataclass
class FacesConfig:
    detector: str = "auto"  # face_detector backend: auto | scrfd | dlib | …
    embedder: str = "auto"  # face_embedder backend: auto | arcface | dlib | … (auto follows a dlib detector)
    detector_weights: str = "scrfd_500m"  # weights registry name for ONNX detectors
    embedder_weights: str = "mobilefacenet_128d"
    max_side: int = 640  # detector input: frames shrunk to this long side (never enlarged)
    det_threshold: float = 0.5
    min_face_px: int = 20  # faces smaller than this (short side, source pixels) are skipped
    top_k: int = 32  # iQIYI-VID §5.1: keep the top 32 faces by quality
    batch_size: int = 32  # frames per detector call, faces per embedder call (bigger on GPU)


def major_faces(faces: Detections, heads: Detections) -> np.ndarray:
    """Which faces are the major character's: in each frame with a major head, the largest
    face whose centre lies inside that head box."""
    major = np.zeros(len(faces), bool)
    if "major" not in heads.data:
        return major
    centre = (faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2
    area = faces.area
    for box, frame in zip(heads.xyxy[heads.data["major"]], heads.frame[heads.data["major"]]):
        inside = (
            (faces.frame == frame)
            & (centre[:, 0] >= box[0]) & (centre[:, 0] <= box[2])
            & (centre[:, 1] >= box[1]) & (centre[:, 1] <= box[3])
        )
        if inside.any():
            major[np.flatnonzero(inside)[np.argmax(area[inside])]] = True
    return major


def rank_by_quality(quality: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """0-based rank by quality among `candidates` (-1 for the others). Stable: equal quality
    keeps time order, so reruns give identical ranks."""
    rank = np.full(len(quality), -1, np.int32)
    idx = np.flatnonzero(candidates)
    rank[idx[np.argsort(-quality[idx], kind="stable")]] = np.arange(len(idx), dtype=np.int32)
    return rank


@register_stage
class FaceStage(Stage):
    name = "faces"
    config = FacesConfig
    order = 20.0
    provides = ("faces",)
    uses = ("major",)  # ranks the major character's faces when the rule ran
    backends = {"detector": "face_detector", "embedder": "face_embedder"}
    tables = {
        "faces": pa.schema([
            *DETECTION_FIELDS,
            pa.field("landmarks", F32_LIST),  # 5 points x, y: eyes, nose, mouth corners (source pixels)
            pa.field("quality", pa.float32()),  # L2 norm of the raw embedding
            pa.field("embedding", F32_LIST),  # L2-normalised
            pa.field("major", pa.bool_()),  # the major character's face; null when the rule did not run
            pa.field("rank", pa.int32()),  # by quality among the ranked faces, 0 = best; null for others
            pa.field("selected", pa.bool_()),  # rank < faces.top_k (32): the papers' top faces
        ])
    }
    clip_columns = (pa.field("n_faces", pa.int32()),)

    def backend_name(self, key: str) -> str | None:
        # dlib's descriptor needs no landmarks of quality; an ArcFace embedder on dlib's
        # estimated mouth corners would be a worse pair than dlib + dlib.
        if key == "embedder" and self.options.embedder == "auto" and self.models["detector"].name == "dlib":
            return "dlib"
        return None

    def detect(self, ctxs: list[ClipContext]) -> list[Detections]:
        """Each clip's faces: those an earlier stage found with the same detector, or found
        now on the frames of all the clips that need them, `batch_size` per call."""
        detector = self.models["detector"]
        found: list[Detections | None] = [None] * len(ctxs)
        for i, ctx in enumerate(ctxs):
            if ctx.searched.get(FACE) == detector.name:  # an earlier stage ran the same detector
                faces = ctx.found.of_kind(FACE)
                if "landmarks" in faces.data:
                    found[i] = faces
        todo = [i for i, f in enumerate(found) if f is None]
        for i, faces in zip(todo, detect_across(detector, [ctxs[i] for i in todo], self.options.batch_size)):
            found[i] = faces
        return found

    def process(self, ctx: ClipContext) -> StageResult:
        return self.process_batch([ctx])[0]

    def process_batch(self, ctxs: list[ClipContext]) -> list[StageResult]:
        """Faces of all the clips detected and embedded together, then ranked clip by clip."""
        kept = []
        for ctx, faces in zip(ctxs, self.detect(ctxs)):
            scale = np.array([ctx.frames[i].scale for i in faces.frame], np.float32)
            keep = (faces.confidence >= self.options.det_threshold) & (faces.short_side * scale >= self.options.min_face_px)
            kept.append(faces[keep])
        images = [image for ctx in ctxs for image in ctx.images]
        starts = np.cumsum([0] + [len(ctx.frames) for ctx in ctxs])
        every = Detections.merge([faces.shifted(int(s)) for faces, s in zip(kept, starts)])
        raw = self.models["embedder"].embed(images, every) if len(every) else np.zeros((0, 0), np.float32)
        bounds = np.cumsum([0] + [len(faces) for faces in kept])
        return [self.describe(ctx, faces, raw[bounds[i] : bounds[i + 1]]) for i, (ctx, faces) in enumerate(zip(ctxs, kept))]

    def describe(self, ctx: ClipContext, faces: Detections, raw: np.ndarray) -> StageResult:
        """One clip's faces with their raw embeddings: quality, rank, rows."""
        quality = np.linalg.norm(raw, axis=1).astype(np.float32) if len(faces) else np.zeros(0, np.float32)
        embedding = (raw / np.maximum(quality[:, None], 1e-12)).astype(np.float32)
        scale = np.array([ctx.frames[i].scale for i in faces.frame], np.float32)
        heads = ctx.found.of_kind(HEAD)
        rule_ran = HEAD in ctx.searched
        major = major_faces(faces, heads) if rule_ran else np.ones(len(faces), bool)
        rank = rank_by_quality(quality, major)
        order = np.lexsort((-quality, np.where(rank < 0, 0, rank), rank < 0))  # ranked first, by rank; then by quality
        faces, quality, embedding, major, rank = faces[order], quality[order], embedding[order], major[order], rank[order]
        faces.data.update(embedding=embedding, quality=quality, major=major)
        landmarks = faces.data.get("landmarks", np.zeros((len(faces), 5, 2), np.float32)) * scale[order].reshape(-1, 1, 1)
        columns = ctx.detection_columns(faces)
        columns.update(
            landmarks=list(landmarks.reshape(len(faces), 10)),
            quality=quality,
            embedding=list(embedding),
            major=list(major) if rule_ran else [None] * len(faces),
            rank=[int(r) if r >= 0 else None for r in rank],
            selected=(rank >= 0) & (rank < self.options.top_k),
        )
        return StageResult(found=faces, searched={FACE: self.models["detector"].name},
                           fields={"n_faces": len(faces)}, rows={"faces": columns})
