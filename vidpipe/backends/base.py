"""The interfaces every network backend implements (detectors, embedders, voice activity,
speaker embedding, active speaker). Backends return the records of `vidpipe.records`
(`Detections`); no backend imports a domain module.

Images are upright BGR uint8 arrays (H, W, 3), as OpenCV and insightface expect. A batch is a
list of images; a GPU run is the same code with bigger batches.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from vidpipe.records import FACE, HEAD, KIND_NAMES, PERSON, Detections  # noqa: F401  (the backends' record)


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


class VoiceActivityDetector(Backend):
    """16 kHz audio → where speech is."""

    @abstractmethod
    def speech(self, samples: np.ndarray) -> np.ndarray:
        """(K, 2) int64 sample ranges [start, end) of speech in `samples` (16 kHz)."""


class SpeakerEmbedder(Backend):
    """Speech of several clips → one L2-normalised embedding each, batched over clips."""

    dim: int

    @abstractmethod
    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """(len(clips), dim) float32 for 16 kHz speech (float or int16); NaN rows for empty or silent clips."""


class ActiveSpeakerScorer(Backend):
    """Face crops at `fps` + the audio heard with them → one speaking logit per crop."""

    fps: float = 25.0

    @abstractmethod
    def crop(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The model's face crop from a grey picture; `box` = x1, y1, x2, y2 in its pixels."""

    @abstractmethod
    def score(self, tracks: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """For each (16 kHz int16 samples, (T, h, w) crops) starting at the same instant: (T,)
        float32 logits, batched over tracks."""
