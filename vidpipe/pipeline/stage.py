"""The stage contract: what a plug-in stage declares, receives and returns.

Like PySceneDetect's `SceneManager.add_detector` feeding `SceneDetector`s from one decode,
the runner feeds every configured stage, in order, the same kept clip: its sampled frames
plus everything earlier stages found (one `Detections` record). A stage declares

- `name` — also its config section `[name]` (a dataclass, `config`);
- `tables` — the store tables it writes, with their Arrow schemas;
- `clip_columns` — columns it adds to the `clips` table (e.g. `valid_frame_ratio`);
- `backends` — config key → backend task, e.g. `{"detector": "face_detector"}`: the key in
  its section names the backend (`faces.detector = "scrfd"`), the registry builds it;
- `provides`, `requires`, `uses` — what it hands on (e.g. "speech", the clip's audio), what
  an earlier stage must have handed on for it to work at all, and what it reads when an
  earlier stage hands it on. `check_order` turns a pipeline that breaks these into a
  one-line error (`asd` before `speech` would otherwise write nulls);

and returns a `StageResult`: what it found (merged into the clip's record), its clip
columns, its rows, and optionally a reject reason that stops later stages for that clip.
The runner hands a stage a batch of kept clips at a time (`process_batch`, up to
`run.batch_frames` sampled frames), so a detector can fill its network batches across
clips; by default that is a loop over `process`, so a simple stage handles one clip.
The runner knows no stage by name. Stages live one per module in `vidpipe/stages/` (found
there automatically) or come from the `vidpipe.stages` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from vidpipe.records import ClipContext, Detections, Frame  # noqa: F401  (the stages' records)
from vidpipe.registry import qualified_name
from vidpipe.util import load_plugins

if TYPE_CHECKING:
    from vidpipe.config import Config
    from vidpipe.registry import Backends


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
    provides: ClassVar[tuple[str, ...]] = ()  # what later stages may read from the clip's record
    requires: ClassVar[tuple[str, ...]] = ()  # must be provided by an earlier stage
    uses: ClassVar[tuple[str, ...]] = ()  # read when provided, by a stage that must then run earlier

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

    def process_batch(self, ctxs: list[ClipContext]) -> list[StageResult]:
        """Look at several kept clips (one result each, in order). Override it to batch
        network calls across clips; the results must be those `process` gives."""
        return [self.process(ctx) for ctx in ctxs]

    def empty_fields(self) -> dict[str, Any]:
        """Clip columns of a clip this stage did not see (rejected before it): nulls."""
        return {f.name: None for f in self.clip_columns}


def detect_across(detector, contexts: list[ClipContext], batch: int,
                  frames: list[np.ndarray] | None = None) -> list[Detections]:
    """`detector` on the sampled frames of several clips (all, or each clip's `frames`),
    `batch` frames per call whatever clip they come from; each clip's rows, numbered by its
    own frames."""
    if frames is None:
        frames = [np.arange(len(ctx.frames)) for ctx in contexts]
    images = [ctx.frames[i].image for ctx, picked in zip(contexts, frames) for i in picked]
    batch = max(1, batch)
    found = Detections.merge([detector.detect(images[i : i + batch]).shifted(i) for i in range(0, len(images), batch)])
    parts, start = [], 0
    for picked in frames:
        mine = found[(found.frame >= start) & (found.frame < start + len(picked))]
        mine.frame = np.asarray(picked, np.int32)[mine.frame - start]
        parts.append(mine)
        start += len(picked)
    return parts


_STAGES: dict[str, type[Stage]] = {}
_loaded = False


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available by its `name`."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no name")
    from vidpipe.config import CORE_SECTIONS

    if cls.name in CORE_SECTIONS:
        raise ValueError(f"stage name {cls.name!r} is taken by a core config section")
    taken = _STAGES.get(cls.name)
    if taken is not None and qualified_name(taken) != qualified_name(cls):
        raise ValueError(f"stage {cls.name!r} is registered twice: by {qualified_name(taken)} and by {qualified_name(cls)}")
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


def check_order(stages: list[type[Stage]]) -> str | None:
    """Why these stages cannot run in this order (one line), or None when they can: each
    `requires` must be provided by an earlier stage, each `uses` that some stage provides
    must be provided before it."""
    names = [s.name for s in stages]
    for i, stage in enumerate(stages):
        earlier = {p for s in stages[:i] for p in s.provides}
        later = {p: s.name for s in reversed(stages[i + 1:]) for p in s.provides}
        for need in stage.requires:
            if need in earlier:
                continue
            if need in later:
                return (f"stage {stage.name} needs {need!r} from stage {later[need]}, which runs after it "
                        f"(pipeline.stages = {','.join(names)}): put {later[need]} first")
            makers = [n for n, c in stage_classes().items() if need in c.provides]
            return (f"stage {stage.name} needs {need!r}, which no earlier stage provides"
                    + (f": add {' or '.join(makers)} before it" if makers else ""))
        for want in stage.uses:
            if want in later and want not in earlier:
                return (f"stage {stage.name} reads {want!r} from stage {later[want]}, which runs after it "
                        f"(pipeline.stages = {','.join(names)}): put {later[want]} first")
    return None


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
