"""The record that flows between stages and the interfaces every network backend implements.

Images are upright BGR uint8 arrays (H, W, 3), as OpenCV and insightface expect. A batch is a
list of images; a GPU run is the same code with bigger batches.

`Detections` is modelled on supervision's: one dataclass of parallel arrays (boxes, scores,
kind, frame) plus a `data` dict of per-row extras (landmarks, embedding, major flag, …).
A detector returns ONE `Detections` for a whole batch, each row saying which image of the
batch (`frame`) it belongs to, so stages select, merge and pass them on without loops.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

# What a row is. Integer codes keep masks cheap; names are for people and the store.
FACE, HEAD, PERSON = 0, 1, 2
KIND_NAMES = {FACE: "face", HEAD: "head", PERSON: "person"}


def _fill_value(like: np.ndarray) -> Any:
    if like.dtype == np.bool_:
        return False
    if np.issubdtype(like.dtype, np.integer):
        return -1
    if np.issubdtype(like.dtype, np.floating):
        return np.nan
    return None


@dataclass
class Detections:
    """Boxes found in a batch of images, in that batch's image pixels (x1, y1, x2, y2)."""

    xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    kind: np.ndarray  # (N,) int8: FACE | HEAD | PERSON
    frame: np.ndarray  # (N,) int32: which image of the batch (or frame of the clip)
    data: dict[str, np.ndarray] = field(default_factory=dict)  # per-row extras, first axis N

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, np.float32).reshape(n)
        self.kind = np.broadcast_to(np.asarray(self.kind, np.int8), (n,)).copy()
        self.frame = np.broadcast_to(np.asarray(self.frame, np.int32), (n,)).copy()
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"Detections.data[{key!r}] has {len(value)} rows, expected {n}")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int8), np.zeros(0, np.int32))

    @classmethod
    def of(cls, xyxy, confidence, kind: int, frame: int | np.ndarray = 0, **data: np.ndarray) -> "Detections":
        """Rows of one kind (in one image unless `frame` is an array)."""
        return cls(np.asarray(xyxy, np.float32).reshape(-1, 4), confidence, kind, frame, dict(data))

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: np.ndarray | slice | int | list[int]) -> "Detections":
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index], self.confidence[index], self.kind[index], self.frame[index],
            {k: v[index] for k, v in self.data.items()},
        )

    @classmethod
    def merge(cls, parts: Sequence["Detections"]) -> "Detections":
        """Rows of all parts, in order. A `data` key missing from some part is filled there
        (NaN, -1, False or zeros), so records from different stages combine."""
        parts = [p for p in parts if p is not None]
        if not parts:
            return cls.empty()
        keys: dict[str, np.ndarray] = {}
        for p in parts:
            for k, v in p.data.items():
                keys.setdefault(k, v)
        data = {}
        for k, like in keys.items():
            cols = []
            for p in parts:
                if k in p.data:
                    cols.append(p.data[k])
                else:
                    filler = np.empty((len(p), *like.shape[1:]), like.dtype)
                    fill = _fill_value(like)
                    filler[...] = 0 if fill is None else fill
                    cols.append(filler)
            data[k] = np.concatenate(cols)
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.confidence for p in parts]),
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.frame for p in parts]),
            data,
        )

    # -- conveniences used by stages -------------------------------------------------
    def of_kind(self, kind: int) -> "Detections":
        return self[self.kind == kind]

    def in_frame(self, frame: int) -> "Detections":
        return self[self.frame == frame]

    def shifted(self, frames: int) -> "Detections":
        """The same rows with frame numbers offset (a batch's rows placed in a clip)."""
        out = self[slice(None)]
        out.frame = out.frame + np.int32(frames)
        return out

    def scaled(self, factor: float | np.ndarray) -> np.ndarray:
        """Boxes multiplied by `factor` (e.g. analysis -> source pixels)."""
        return (self.xyxy * np.asarray(factor, np.float32).reshape(-1, 1)).astype(np.float32)

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    @property
    def short_side(self) -> np.ndarray:
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.minimum(wh[:, 0], wh[:, 1])


def crop(image: np.ndarray, box: np.ndarray, pad: float = 0.0) -> np.ndarray:
    """The part of `image` inside `box` (grown by `pad` × its size on every side), clipped
    to the image; a 1×1 black crop when nothing is left."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * pad, (y2 - y1) * pad
    x1, y1 = int(max(0, np.floor(x1 - dx))), int(max(0, np.floor(y1 - dy)))
    x2, y2 = int(min(w, np.ceil(x2 + dx))), int(min(h, np.ceil(y2 + dy)))
    if x2 <= x1 or y2 <= y1:
        return np.zeros((1, 1, 3), image.dtype)
    return image[y1:y2, x1:x2]


@dataclass
class ModelStats:
    """Network calls and their pure inference seconds (the benchmark's "model time")."""

    calls: int = 0
    items: int = 0
    seconds: float = 0.0


class Backend(ABC):
    """Anything that runs a pretrained network. Subclasses set `name` and `weight_files`
    (recorded with their sha256 in the manifest) and call `self.timed(fn, n)` around each
    network call so that calls and model time are counted in one place."""

    task: ClassVar[str] = ""
    name: str = ""
    weight_files: list[Path]

    def __init__(self) -> None:
        self.weight_files = []
        self.stats = ModelStats()

    def timed(self, fn, items: int = 1):
        """Run `fn()` (one network call over `items` inputs) and count it."""
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.stats.calls += 1
            self.stats.items += items
            self.stats.seconds += time.perf_counter() - started

    def describe(self) -> str:
        """One line for logs: what this backend is."""
        files = ", ".join(p.name for p in self.weight_files) or "no weights file"
        return f"{self.name} ({files})"


class Detector(Backend):
    """`detect(images)` → one Detections for the batch (`frame` = index into `images`)."""

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        ...


class FaceEmbedder(Backend):
    """Faces (boxes with 5-point landmarks) of whole images → raw embeddings.

    The embedding is *raw* (un-normalised): its L2 norm is the face-quality score of
    iQIYI-VID §5.1; callers normalise it themselves. Landmark-free boxes are allowed for
    embedders that find their own landmarks (dlib)."""

    dim: int

    @abstractmethod
    def embed(self, images: Sequence[np.ndarray], faces: Detections) -> np.ndarray:
        """(len(faces), dim) float32; row i is face i of image `faces.frame[i]`."""


class Embedder(Backend):
    """Image crops (heads, bodies) → (N, dim) float32 embeddings, one network call per batch."""

    dim: int

    @abstractmethod
    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        ...
