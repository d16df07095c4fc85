"""The stage contract: what a plug-in stage declares, receives and returns.

Like PySceneDetect's `SceneManager.add_detector` feeding `SceneDetector`s from one decode,
the runner feeds every configured stage, in order, the same kept clip: its sampled frames
plus everything earlier stages found (one `Detections` record). A stage declares

- `name` — also its config section `[name]` (a dataclass, `config`);
- `tables` — the store tables it writes, with their Arrow schemas;
- `clip_columns` — columns it adds to the `clips` table (e.g. `valid_frame_ratio`);
- `backends` — config key → backend task, e.g. `{"detector": "face_detector"}`: the key in
  its section names the backend (`faces.detector = "scrfd"`), the registry builds it;

and returns a `StageResult`: what it found (merged into the clip's record), its clip
columns, its rows, and optionally a reject reason that stops later stages for that clip.
The runner knows no stage by name. Stages live one per module in `vidpipe/stages/` (found
there automatically) or come from the `vidpipe.stages` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from vidpipe.backends.base import Detections
from vidpipe.util import load_plugins

if TYPE_CHECKING:
    from vidpipe.config import Config
    from vidpipe.pipeline.clips import Clip
    from vidpipe.registry import Backends
    from vidpipe.video import VideoInfo


F32_LIST = pa.list_(pa.float32())

# The first columns of every per-detection table: which clip, which frame, where.
DETECTION_FIELDS: tuple[pa.Field, ...] = (
    pa.field("clip_id", pa.string()),
    pa.field("video_id", pa.string()),
    pa.field("frame_index", pa.int32()),  # frame number in decode order
    pa.field("time_s", pa.float64()),  # seconds on the file's presentation timeline
    pa.field("bbox", F32_LIST),  # x1, y1, x2, y2 in source (displayed) pixels
    pa.field("det_score", pa.float32()),
)


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
class StageResult:
    found: Detections | None = None  # rows for later stages; they replace the record's rows of the same kinds
    searched: dict[int, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # values of the stage's clip_columns
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # table -> columns
    record: Any = None  # put in ClipContext.records under the stage's name
    reject: str | None = None  # the clip is rejected for this reason; later stages skip it


@dataclass
class NoOptions:
    """The config section of a stage without options."""


class Stage(ABC):
    name: ClassVar[str]
    config: ClassVar[type] = NoOptions
    tables: ClassVar[dict[str, pa.Schema]] = {}
    clip_columns: ClassVar[tuple[pa.Field, ...]] = ()
    backends: ClassVar[dict[str, str]] = {}  # config key -> backend task
    order: ClassVar[float] = 100.0  # default position among the stages
    default: ClassVar[bool] = True  # runs unless `pipeline.stages` says otherwise

    def __init__(self, cfg: "Config", backends: "Backends") -> None:
        self.options = cfg.section(self.name)
        self.settings = cfg  # the whole config, for the few shared sections a stage reads
        self.models: dict[str, Any] = {}
        for key, task in self.backends.items():  # in declaration order: later ones may look at earlier ones
            self.models[key] = backends.get(task, self.backend_name(key))

    def backend_name(self, key: str) -> str | None:
        """The backend to build for `key`; None: what the config section names."""
        return None

    @abstractmethod
    def process(self, ctx: ClipContext) -> StageResult:
        """Look at one kept clip; never called for a clip an earlier stage rejected."""

    def empty_fields(self) -> dict[str, Any]:
        """Clip columns of a clip this stage did not see (rejected before it): nulls."""
        return {f.name: None for f in self.clip_columns}


_STAGES: dict[str, type[Stage]] = {}
_loaded = False


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available by its `name`."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no name")
    from vidpipe.config import CORE_SECTIONS

    if cls.name in CORE_SECTIONS:
        raise ValueError(f"stage name {cls.name!r} is taken by a core config section")
    _STAGES[cls.name] = cls
    return cls


def stage_classes() -> dict[str, type[Stage]]:
    """Every known stage by name, in default order."""
    global _loaded
    if not _loaded:
        _loaded = True
        load_plugins("vidpipe.stages", "vidpipe.stages")
    return dict(sorted(_STAGES.items(), key=lambda kv: kv[1].order))


def default_stages() -> list[str]:
    return [name for name, cls in stage_classes().items() if cls.default]


def backend_owner(task: str, names: list[str] | None = None) -> tuple[str, str] | None:
    """(stage, config key) whose section configures backend `task`: the first of the
    active stages (`names`) that declares it, else the first known stage that does."""
    classes = stage_classes()
    ordered = [n for n in (names or []) if n in classes] + [n for n in classes if n not in (names or [])]
    for name in ordered:
        for key, t in classes[name].backends.items():
            if t == task:
                return name, key
    return None
