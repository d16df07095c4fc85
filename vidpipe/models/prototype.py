"""The built-in baseline (``--arch prototype``): each identity is the mean of its training
clips' normalised features, and clips are scored by cosine to each identity.

A clip's vector is the mean of its L2-normalised frames, normalised; with several modalities
the per-modality vectors are concatenated (a missing one is zeros) and normalised again. It
needs no GPU and no training, suits a handful of labelled clips per person, and is the bar a
trained model must clear: ``vidpipe train`` prints both on the same held-out clips.

Scores are cosines. Open set: the noise class "0" scores the model's `threshold`, so a clip
whose best cosine is under it is called noise (a stranger), not the nearest identity.
`fit` sets it from the training clips, leave-one-out: each labelled clip against the other
identities' prototypes (and each noise clip against all) is a stranger, and the threshold
is the lowest that names at most `TARGET_FPIR` (1 %) of them. A handful of identities
says little about the world's strangers (5 celebrities gave 0.193, and 42 % of the shared
photos' other people were named), so with fewer than `MIN_IDENTITIES` identities or too
few strangers to measure 1 % the threshold is at least `DEFAULT_THRESHOLD`. Model directories saved
without one use `DEFAULT_THRESHOLD`, measured that way on the shared photos with the
default face embedder (MobileFaceNet ArcFace, 16 people, 118 photos: 0.368, strangers
named 0.8 %, leave-one-out clips named right 97.4 %; the noise column used to score 0,
which named a stranger at cosine 0.12).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidpipe.models.data import NOISE, ClipSet, DataError, FrameBank, build_classes

FORMAT = "vidpipe-prototype/1"
TARGET_FPIR = 0.01
DEFAULT_THRESHOLD = 0.368
MIN_IDENTITIES = 10  # fewer, or fewer than 1 / TARGET_FPIR strangers: the threshold is at least the default


def pooled(bank: FrameBank, chunk: int = 256) -> np.ndarray:
    """(clips, D) unit vectors: the mean of each clip's L2-normalised frames (zeros when none),
    computed a chunk of clips at a time so that memory-mapped banks stream."""
    out = np.zeros((len(bank.count), bank.dim), np.float32)
    for lo in range(0, len(bank.count), chunk):
        start, count = bank.start[lo : lo + chunk], bank.count[lo : lo + chunk]
        clip = torch.repeat_interleave(torch.arange(len(count)), count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        rows = torch.repeat_interleave(start, count) + torch.arange(len(clip)) - first
        x = torch.nn.functional.normalize(bank.frames[rows].float(), dim=1)
        sums = torch.zeros(len(count), bank.dim).index_add_(0, clip, x)
        out[lo : lo + len(count)] = torch.nn.functional.normalize(sums, dim=1).numpy()
    return out


def clip_vectors(data: ClipSet, modalities: Sequence[str]) -> np.ndarray:
    missing = [m for m in modalities if m not in data.banks]
    if missing:
        raise DataError(f"modalities not in the data: {', '.join(missing)}")
    x = np.concatenate([pooled(data.banks[m].to("cpu")) for m in modalities], axis=1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def open_set_threshold(x: np.ndarray, labels: np.ndarray, classes: list[str], prototypes: np.ndarray,
                       target_fpir: float = TARGET_FPIR, block: int = 4096) -> float:
    """The lowest cosine that names at most `target_fpir` of the strangers among the clips
    `x` (see the module docstring), in blocks of clips; DEFAULT_THRESHOLD when there are none."""
    index = {c: i for i, c in enumerate(classes[1:])}
    own = np.array([index.get(label, -1) for label in labels], np.int64)
    best = []
    for lo in range(0, len(x), block):
        scores = x[lo : lo + block] @ prototypes.T
        mine = own[lo : lo + block]
        rows = np.flatnonzero(mine >= 0)
        scores[rows, mine[rows]] = -np.inf  # a labelled clip is a stranger to the other identities
        best.append(scores.max(1) if scores.shape[1] else np.full(len(scores), -np.inf))
    strangers = np.sort(np.concatenate(best) if best else np.zeros(0))[::-1]
    strangers = strangers[np.isfinite(strangers)]
    if not len(strangers):
        return DEFAULT_THRESHOLD
    found = float(np.nextafter(np.float32(strangers[int(target_fpir * len(strangers))]), np.float32(np.inf)))
    if len(classes) - 1 < MIN_IDENTITIES or len(strangers) * target_fpir < 1:
        return max(found, DEFAULT_THRESHOLD)  # too few to stand for the world's strangers
    return found


@dataclass
class PrototypeModel:
    classes: list[str]  # classes[0] is the noise class "0" (no prototype)
    modalities: list[str]
    prototypes: np.ndarray  # (identities, D) unit rows, in the order of classes[1:]
    threshold: float = DEFAULT_THRESHOLD  # open set: the noise class's score

    @classmethod
    def fit(cls, data: ClipSet, modalities: Sequence[str] = ("face",)) -> "PrototypeModel":
        if data.labels is None:
            raise DataError("the training clips have no labels")
        x = clip_vectors(data, modalities)
        labels = np.array([label if label is not None else NOISE for label in data.labels])
        known = np.linalg.norm(x, axis=1) > 0  # clips that have none of the modalities say nothing
        classes = build_classes(labels[known])
        if len(classes) < 2:
            raise DataError(f"no labelled clip has any of: {', '.join(modalities)}")
        protos = np.stack([x[known & (labels == i)].mean(0) for i in classes[1:]])
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        threshold = open_set_threshold(x[known], labels[known], classes, protos)
        return cls(classes, list(modalities), protos.astype(np.float32), threshold)

    def scores(self, data: ClipSet, frames: int | None = None, batch_size: int | None = None) -> np.ndarray:
        """(clips, classes) cosines; the noise column is the open-set threshold. Every frame
        of a clip counts (``frames`` and ``batch_size`` exist for the fusion model's interface)."""
        x = clip_vectors(data, self.modalities)
        return np.concatenate([np.full((len(data), 1), self.threshold, np.float32), x @ self.prototypes.T], axis=1)

    def save(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        np.save(model_dir / "prototypes.npy", self.prototypes)
        (model_dir / "model.json").write_text(json.dumps(
            {"format": FORMAT, "classes": self.classes, "modalities": self.modalities, "threshold": self.threshold,
             "complete": True}, indent=1))

    @classmethod
    def load(cls, model_dir: str | Path) -> "PrototypeModel":
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "model.json").read_text())
        return cls(meta["classes"], meta["modalities"], np.load(model_dir / "prototypes.npy"),
                   float(meta.get("threshold", DEFAULT_THRESHOLD)))

