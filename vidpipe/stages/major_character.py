"""The single-major-character rule (iQIYI-VID §3.2), on the sampled frames of each clip.

Heads are detected on every sampled frame. A frame is *valid* when exactly one head is
found, or the biggest head's area is at least `area_ratio` (3) times every other head's;
its major head is that one. A clip is valid when its valid frames are at least
`min_valid_ratio` (30%) of its sampled frames. `valid_frame_ratio` is stored on every clip
that reached this stage; an invalid clip is rejected `no_major_character` (later stages
skip it, so no face, head or body network runs on it) unless
`clips.require_major_character` is false, which keeps every clip (crowds, for tagging).

The major character is a person whose head is seen. A head that person_face guessed from a
person box cut by the frame's top or a side (`head_out_of_frame`: arms, hands, a torso) still
counts as a head for the rule, but is never accepted as the major head: such a frame has no
major character for the later stages, and a clip whose valid frames pass the rule but
whose major heads are seen in fewer than `min_valid_ratio` of its frames is rejected
`no_major_head_in_frame` (hands-only shots otherwise pass with ratios near 1).
Major heads are marked `data["major"]` for the faces, heads and bodies stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vidpipe.backends.base import HEAD, Detections
from vidpipe.backends.person_face import OUT_OF_FRAME
from vidpipe.pipeline.stage import ClipContext, Stage, StageResult, detect_across, register_stage

REJECT_REASON = "no_major_character"
HEAD_NOT_SEEN = "no_major_head_in_frame"  # the rule passed, on heads guessed from cut person boxes


@dataclass
class MajorCharacterConfig:
    detector: str = "auto"  # head_detector: auto (= person_face) | person_face | wholebody | yolo_onnx | yolo_pt
    area_ratio: float = 3.0  # iQIYI-VID §3.2: the biggest head >= 3x (area) every other
    min_valid_ratio: float = 0.3  # iQIYI-VID §3.2: valid frames >= 30% of the sampled frames
    det_threshold: float = 0.4  # head score threshold (wholebody, yolo_*; person_face uses faces/bodies')
    max_per_class: int = 100  # wholebody: NMS cap per class (the file says 20; crowds have more)
    model_path: str | None = None  # yolo_onnx / yolo_pt: your model file
    head_class: int = 0  # yolo_onnx / yolo_pt: the class index of heads
    batch_size: int = 16  # frames per detector call, across clips


def judge_frames(heads: Detections, n_frames: int, area_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(valid: one bool per frame, major: one bool per head row) by the rule above."""
    valid = np.zeros(n_frames, bool)
    major = np.zeros(len(heads), bool)
    area = heads.area
    for f in range(n_frames):
        rows = np.flatnonzero(heads.frame == f)
        if len(rows) == 0:
            continue
        order = rows[np.argsort(-area[rows], kind="stable")]
        if len(order) == 1 or area[order[0]] >= area_ratio * area[order[1]]:
            valid[f] = True
            major[order[0]] = True
    return valid, major


@register_stage
class MajorCharacterStage(Stage):
    name = "major_character"
    config = MajorCharacterConfig
    order = 10.0
    provides = ("major",)  # HEAD rows, the major one of each valid frame marked data["major"]
    backends = {"detector": "head_detector"}
    clip_columns = (pa.field("valid_frame_ratio", pa.float32()),)  # valid frames / sampled frames

    def process(self, ctx: ClipContext) -> StageResult:
        return self.process_batch([ctx])[0]

    def process_batch(self, ctxs: list[ClipContext]) -> list[StageResult]:
        """Heads on the frames of all the clips, `batch_size` frames per detector call."""
        detector = self.models["detector"]
        return [self.judge(ctx, found) for ctx, found in zip(ctxs, detect_across(detector, ctxs, self.options.batch_size))]

    def judge(self, ctx: ClipContext, found: Detections) -> StageResult:
        """The rule on one clip's detections."""
        detector = self.models["detector"]
        is_head = found.kind == HEAD
        heads = found[is_head]
        valid, major = judge_frames(heads, len(ctx.frames), self.options.area_ratio)
        if OUT_OF_FRAME in heads.data:
            major &= ~heads.data[OUT_OF_FRAME]
        found.data["major"] = np.zeros(len(found), bool)
        found.data["major"][is_head] = major
        ratio = float(valid.mean()) if len(valid) else 0.0
        n = len(ctx.frames)
        seen_ratio = float(major.sum()) / n if n else 0.0  # one major head per frame at most
        reject = (REJECT_REASON if ratio < self.options.min_valid_ratio
                  else HEAD_NOT_SEEN if seen_ratio < self.options.min_valid_ratio else None)
        if not self.settings.clips.require_major_character:
            reject = None
        return StageResult(found=found, searched=getattr(detector, "searched", None) or {HEAD: detector.name},
                           fields={"valid_frame_ratio": ratio}, reject=reject)
