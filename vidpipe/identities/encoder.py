"""Faces of photos and video frames, embedded exactly as `vidpipe run` embeds them.

The detector and embedder come from the faces stage itself (same config section, same
"auto" choice, same dlib pairing, same detection threshold and minimum face size), so a
gallery photo, a search photo and a store face are points of one embedding space. The
backends' names and weights sha256 form a `Fingerprint`; embeddings with different
fingerprints are not comparable and vidpipe refuses to mix them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidpipe.config import Config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# iQIYI-VID §3.2's major-head rule, applied to the faces of one photo or frame: the biggest
# face is the person when it is at least this many times the area of the next one.
DOMINANT_AREA_RATIO = 3.0
FACE_TASKS = ("face_detector", "face_embedder")


class IdentitiesError(Exception):
    """Bad input to enrolment, tagging or search (a one-line message for the user)."""


@dataclass
class Face:
    """One face of an image: box in that image's pixels, L2-normalised embedding."""

    bbox: np.ndarray  # x1, y1, x2, y2
    det_score: float
    quality: float  # L2 norm of the raw embedding
    embedding: np.ndarray

    @property
    def area(self) -> float:
        w, h = self.bbox[2:] - self.bbox[:2]
        return float(max(w, 0) * max(h, 0))


def dominant(faces: Sequence[Face], ratio: float = DOMINANT_AREA_RATIO) -> Face | None:
    """The one face an image is about: the only face, or the biggest when it is `ratio`
    times the area of the next; None when there is no face or the person is ambiguous."""
    if not faces:
        return None
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    if len(ranked) == 1 or ranked[0].area >= ratio * ranked[1].area:
        return ranked[0]
    return None


@dataclass(frozen=True)
class Fingerprint:
    """The face backends that made some embeddings: {task: [name, [[file name, sha256], …]]}."""

    backends: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Fingerprint":
        """From a manifest's `stages.backends` (or `to_dict`): only the face tasks count."""
        rows = []
        for task in FACE_TASKS:
            entry = data.get(task)
            if entry is None:
                raise KeyError(task)
            weights = tuple((Path(w["file"]).name, w["sha256"]) for w in entry.get("weights", []))
            rows.append((task, entry["name"], weights))
        return cls(tuple(rows))

    def to_dict(self) -> dict[str, Any]:
        return {task: {"name": name, "weights": [{"file": f, "sha256": s} for f, s in weights]}
                for task, name, weights in self.backends}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Fingerprint":
        return cls.from_dict(json.loads(text))

    @property
    def embedder_key(self) -> str:
        """'arcface:mobilefacenet_128d.onnx', 'dlib:…': what calibrated defaults are keyed by."""
        _, name, weights = self.backends[-1]
        return f"{name}:{weights[-1][0]}" if weights else name

    def describe(self) -> str:
        parts = []
        for _, name, weights in self.backends:
            files = ", ".join(f"{f} {s[:8]}" for f, s in weights)
            parts.append(f"{name} ({files})" if files else name)
        return " + ".join(parts)


def store_fingerprint(out: str | Path) -> Fingerprint:
    """The face backends a feature store was made with (from its manifest)."""
    path = Path(out) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        return Fingerprint.from_dict(manifest["stages"]["backends"])
    except FileNotFoundError:
        raise IdentitiesError(f"{out} is not a vidpipe feature store (no manifest.json): run `vidpipe run` first") from None
    except (ValueError, KeyError, TypeError):
        raise IdentitiesError(f"{path} names no face backends: was {out} made with the faces stage?") from None


def require_same(gallery: Fingerprint, store: Fingerprint, gallery_name: str, store_name: str) -> None:
    """Refuse to compare embeddings of different backends or weights (one line)."""
    if gallery != store:
        raise IdentitiesError(
            f"gallery {gallery_name} was made with {gallery.describe()} but store {store_name} with "
            f"{store.describe()}: their embeddings are not comparable; enrol again with the store's backends"
        )


def read_image(path: str | Path) -> np.ndarray | None:
    """BGR uint8 image, upright (EXIF orientation applied); None when it cannot be decoded."""
    import cv2

    data = np.fromfile(str(path), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


class FaceEncoder:
    """The faces stage's detector and embedder, for images outside a run."""

    def __init__(self, cfg: Config | None = None) -> None:
        from vidpipe.pipeline.runner import config_backends
        from vidpipe.stages.faces import FaceStage
        from vidpipe.weights import describe_file

        cfg = cfg or Config()
        stage = FaceStage(cfg, config_backends(cfg))  # builds the backends only
        self.detector, self.embedder = stage.models["detector"], stage.models["embedder"]
        self.options = stage.options
        described = {task: {"name": b.name, "weights": [describe_file(p) for p in b.weight_files]}
                     for task, b in zip(FACE_TASKS, (self.detector, self.embedder))}
        self.fingerprint = Fingerprint.from_dict(described)

    def faces(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Every usable face of each image (detection threshold and minimum size as the
        faces stage), biggest first."""
        from vidpipe.backends.base import Detections

        batch = max(1, self.options.batch_size)
        det = Detections.merge([self.detector.detect(images[i : i + batch]).shifted(i)
                                for i in range(0, len(images), batch)])
        det = det[(det.confidence >= self.options.det_threshold) & (det.short_side >= self.options.min_face_px)]
        raw = self.embedder.embed(images, det) if len(det) else np.zeros((0, 1), np.float32)
        quality = np.linalg.norm(raw, axis=1)
        embedding = (raw / np.maximum(quality[:, None], 1e-12)).astype(np.float32)
        out: list[list[Face]] = [[] for _ in images]
        for i in range(len(det)):
            out[det.frame[i]].append(Face(det.xyxy[i].copy(), float(det.confidence[i]), float(quality[i]), embedding[i]))
        return [sorted(f, key=lambda face: face.area, reverse=True) for f in out]

    def photo_faces(self, path: str | Path) -> list[Face] | None:
        """Faces of one photo file; None when it is not a readable image."""
        image = read_image(path)
        return None if image is None else self.faces([image])[0]
