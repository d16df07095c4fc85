"""The small interfaces every pretrained-network backend implements.

Images are upright BGR uint8 arrays (H, W, 3) as OpenCV and insightface expect.
A batch is a list of images; a GPU run is the same code with bigger batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class Detections:
    """Detections in one image: boxes in that image's pixels (x1, y1, x2, y2)."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32: eyes, nose, mouth corners

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> "Detections":
        lm = None if self.landmarks is None else self.landmarks[keep]
        return Detections(self.boxes[keep], self.scores[keep], lm)


@dataclass
class FaceBackend(ABC):
    """Face detection + alignment + embedding.

    `embed` returns the *raw* (un-normalised) embedding: its L2 norm is the face-quality
    score of iQIYI-VID §5.1; callers normalise it themselves.
    """

    name: str
    embedding_dim: int
    weight_files: list[Path] = field(default_factory=list)  # recorded with sha256 in the manifest

    @abstractmethod
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each image."""

    @abstractmethod
    def embed(self, images: Sequence[np.ndarray], detections: Sequence[Detections]) -> list[np.ndarray]:
        """Raw embeddings (len(detections[i]), embedding_dim) float32 for each image."""
