"""The records that flow through the house, in one module at the bottom of it.

Stages hand each other a `ClipContext` (the clip, its sampled `Frame`s, every `Detections`
row found so far, and typed records such as the clip's `ClipAudio` and the major
character's `SpeakingScores`); backends return `Detections`. Nothing here imports a stage,
a backend or a domain module, so every layer can import it.

`Detections` is modelled on supervision's: one dataclass of parallel arrays (boxes, scores,
kind, frame) plus a `data` dict of per-row extras (landmarks, embedding, major flag, …).
A detector returns ONE `Detections` for a whole batch, each row saying which image of the
batch (`frame`) it belongs to, so stages select, merge and pass them on without loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from vidpipe.pipeline.clips import Clip
    from vidpipe.video import VideoInfo

SAMPLE_RATE = 16000  # every audio record: 16 kHz mono (iQIYI-VID §5.1)
INT16_SCALE = 32768.0


def to_float(samples: np.ndarray) -> np.ndarray:
    """16-bit samples as float32 in [-1, 1) (what the networks take)."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / INT16_SCALE
    return np.asarray(samples, np.float32)


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


@dataclass
class Frame:
    """One sampled frame of a clip, upright, at analysis size."""

    index: int  # position in decode order
    time_s: float  # seconds on the file's presentation timeline
    image: np.ndarray  # BGR uint8, longest side <= sampling.max_side
    scale: float  # analysis pixels -> source (displayed) pixels


@dataclass
class ClipContext:
    """One kept clip as stages see it. `found` holds every detection so far; its `frame`
    column indexes `frames`. `searched` says which kinds (FACE, HEAD, PERSON) were looked
    for on every frame, and by which backend, so a later stage can reuse them."""

    video: "VideoInfo"
    clip: "Clip"
    frames: list[Frame]
    found: Detections = field(default_factory=Detections.empty)
    searched: dict[int, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    # Typed records that are not boxes, by the name of the stage that made them (e.g. the
    # clip's 16 kHz audio and speech regions): later stages read them, nothing stores them.
    records: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> list[np.ndarray]:
        return [f.image for f in self.frames]

    def detection_columns(self, det: Detections) -> dict[str, Any]:
        """The DETECTION_FIELDS columns of `det`'s rows (boxes in source pixels)."""
        scale = np.array([self.frames[i].scale for i in det.frame], np.float32)
        return {
            "clip_id": [self.clip.clip_id] * len(det),
            "video_id": [self.clip.video_id] * len(det),
            "frame_index": np.array([self.frames[i].index for i in det.frame], np.int32),
            "time_s": np.array([self.frames[i].time_s for i in det.frame], np.float64),
            "bbox": list(det.scaled(scale)),
            "det_score": det.confidence,
        }


@dataclass
class ClipAudio:
    """A clip's audio and where its speech is: what the `speech` stage hands on."""

    samples: np.ndarray  # int16, 16 kHz; sample i at start_s + i / SAMPLE_RATE
    start_s: float  # presentation timeline
    speech: np.ndarray  # (K, 2) sample ranges of speech

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speech_ratio(self) -> float:
        return float((self.speech[:, 1] - self.speech[:, 0]).sum() / max(1, len(self.samples)))

    def speech_mask(self) -> np.ndarray:
        """(n_samples,) bool: inside a speech range."""
        return mask_of(self.speech, len(self.samples))


def mask_of(ranges: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: True inside the sample ranges [start, end)."""
    mask = np.zeros(n, bool)
    for a, b in np.asarray(ranges, np.int64).reshape(-1, 2):
        mask[max(0, a) : max(0, b)] = True
    return mask


@dataclass
class FaceTrack:
    """One face through a time range at the scorer's frame rate."""

    times: np.ndarray  # (T,) presentation seconds: start_s + k / fps
    boxes: np.ndarray  # (T, 4) x1, y1, x2, y2 in source pixels; NaN where the face is not followed

    @property
    def followed(self) -> np.ndarray:
        return ~np.isnan(self.boxes[:, 0])


@dataclass
class SpeakingScores:
    """A track with its logits (NaN where the face is not followed)."""

    track: FaceTrack
    logits: np.ndarray

    @property
    def speaking(self) -> np.ndarray:
        """(T,) bool: followed and logit > 0."""
        return np.nan_to_num(self.logits, nan=-np.inf) > 0

    @property
    def mean_logit(self) -> float:
        followed = self.logits[~np.isnan(self.logits)]
        return float(followed.mean()) if len(followed) else float("nan")

    @property
    def speaking_ratio(self) -> float:
        """Fraction of the followed frames where the face speaks."""
        followed = ~np.isnan(self.logits)
        return float(self.speaking[followed].mean()) if followed.any() else float("nan")
