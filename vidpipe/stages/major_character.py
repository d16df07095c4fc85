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

Most of the rule's cost is on the clips it rejects (crowds, empty shots: no stage after it
reuses their detections), so it looks at every `coarse_step`-th frame first and rejects a
clip whose valid frames there are under `coarse_reject_below`; a kept clip's heads are
found on all its frames, as the later stages need them.
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
MIN_COARSE_FRAMES = 3  # fewer coarse frames than this (clips under ~2 s) never decide alone


@dataclass
class MajorCharacterConfig:
    detector: str = "auto"  # head_detector: auto (= person_face) | person_face | wholebody | yolo_onnx | yolo_pt
    area_ratio: float = 3.0  # iQIYI-VID §3.2: the biggest head >= 3x (area) every other
    min_valid_ratio: float = 0.3  # iQIYI-VID §3.2: valid frames >= 30% of the sampled frames
    det_threshold: float = 0.4  # head score threshold (wholebody, yolo_*; person_face uses faces/bodies')
    max_per_class: int = 100  # wholebody: NMS cap per class (the file says 20; crowds have more)
    model_path: str | None = None  # yolo_onnx / yolo_pt: your model file
    head_class: int = 0  # yolo_onnx / yolo_pt: the class index of heads
    batch_size: int = 8  # frames per detector call, across clips (16: 6% faster, +280 MB on the CPU)
    # A cheaper rule for the clips it rejects: the heads of every `coarse_step`-th frame are
    # found first (1 per second at 4 fps); a clip whose frames there are valid less than
    # `coarse_reject_below` of the time is rejected on them alone (its ratio is theirs). The
    # others, and every clip in library mode, go on to all their frames. 1 / 0: no shortcut.
    coarse_step: int = 4
    coarse_reject_below: float = 0.1


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
        """Heads on the coarse frames of all the clips, then on the other frames of those the
        coarse frames do not reject; `batch_size` frames per detector call, across clips."""
        detector, o = self.models["detector"], self.options
        every = [np.arange(len(ctx.frames)) for ctx in ctxs]
        step = o.coarse_step if o.coarse_step > 1 and self.settings.clips.require_major_character else 1
        coarse = [frames[::step] for frames in every]
        found = detect_across(detector, ctxs, o.batch_size, coarse)
        results: list[StageResult | None] = [None] * len(ctxs)
        rest = []
        for i, ctx in enumerate(ctxs):
            first = self.judge(ctx, found[i], coarse[i])
            if step > 1 and len(coarse[i]) >= MIN_COARSE_FRAMES and first.fields["valid_frame_ratio"] < o.coarse_reject_below:
                results[i] = first
            else:
                rest.append(i)
        others = [np.setdiff1d(every[i], coarse[i]) for i in rest]
        for i, more in zip(rest, detect_across(detector, [ctxs[i] for i in rest], o.batch_size, others)):
            rows = Detections.merge([found[i], more])
            results[i] = self.judge(ctxs[i], rows[np.argsort(rows.frame, kind="stable")], every[i])
        return results

    def judge(self, ctx: ClipContext, found: Detections, looked: np.ndarray) -> StageResult:
        """The rule on one clip's detections on the frames `looked` at."""
        detector = self.models["detector"]
        is_head = found.kind == HEAD
        heads = found[is_head]
        valid, major = judge_frames(heads, len(ctx.frames), self.options.area_ratio)
        if OUT_OF_FRAME in heads.data:
            major &= ~heads.data[OUT_OF_FRAME]
        found.data["major"] = np.zeros(len(found), bool)
        found.data["major"][is_head] = major
        n = len(looked)
        ratio = float(valid[looked].mean()) if n else 0.0
        seen_ratio = float(major.sum()) / n if n else 0.0  # one major head per frame at most
        reject = (REJECT_REASON if ratio < self.options.min_valid_ratio
                  else HEAD_NOT_SEEN if seen_ratio < self.options.min_valid_ratio else None)
        if not self.settings.clips.require_major_character:
            reject = None
        return StageResult(found=found, searched=getattr(detector, "searched", None) or {HEAD: detector.name},
                           fields={"valid_frame_ratio": ratio}, reject=reject)
