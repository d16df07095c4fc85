"""Heads from the face detector together with the person detector (no GPL file needed).

A face finds a head seen from the front; a person box finds the heads faces miss (from
behind, in profile, too small or blurred for the face detector). How a head box is formed:

- **from a face box** (face width fw, height fh, centre cx, cy): the head is 1.5 fw wide
  and 1.35 fh tall, centred on cx and 0.06 fh above cy;
- **from a person box with no face in it** (width pw, top y1, centre cx): the head is
  0.5 pw wide and 1.17 times as tall as wide, centred on cx, its top at y1.

The factors are the medians of the YOLOv9 wholebody15 head boxes measured against SCRFD
faces (190 pairs) and YOLOX people (253 pairs) on the shared photos and video frames; a
person-derived head is typically within ±22% of the measured head's width. A person "has a
face" when a face-derived head's centre lies in its head box grown by half on every side;
overlapping heads (IoU > 0.5) are merged, keeping the face-derived one.

The detectors are the run's own (`faces.detector`, `bodies.detector`, shared instances), so
the FACE and PERSON rows found here are reused by the faces and bodies stages. With no
weights at all these are dlib and OpenCV's HOG: the pip-only fallback.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vidpipe.backends.base import FACE, HEAD, PERSON, Detections, Detector
from vidpipe.backends.yolo import nms
from vidpipe.registry import BackendContext, register

FACE_TO_HEAD_W, FACE_TO_HEAD_H, FACE_TO_HEAD_UP = 1.5, 1.35, 0.06
PERSON_TO_HEAD_W, HEAD_ASPECT = 0.5, 1.17
SAME_HEAD_IOU = 0.5
EDGE_MARGIN = 0.03  # a box edge this close to the frame's (x the frame's side) is cut by it
SIDE_CUT_MAX_ASPECT = 2.0  # a box cut by a side and taller than 2x its width: an arm, or a sliver
# Detections.data key (bool) of HEAD rows guessed from a person box whose head may be out of
# the frame; other detectors do not set it (merge fills False).
OUT_OF_FRAME = "head_out_of_frame"


def heads_from_faces(faces: Detections) -> np.ndarray:
    b = faces.xyxy
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2 - FACE_TO_HEAD_UP * h
    hw, hh = FACE_TO_HEAD_W * w / 2, FACE_TO_HEAD_H * h / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], 1).astype(np.float32)


def heads_from_people(people: Detections) -> np.ndarray:
    b = people.xyxy
    cx, w = (b[:, 0] + b[:, 2]) / 2, PERSON_TO_HEAD_W * (b[:, 2] - b[:, 0])
    return np.stack([cx - w / 2, b[:, 1], cx + w / 2, b[:, 1] + HEAD_ASPECT * w], 1).astype(np.float32)


def head_in_frame(people: Detections, frame_size: tuple[int, int]) -> np.ndarray:
    """Whether each person box can be trusted to have its head at its top centre.

    Not when the box is cut by the frame's top edge: its head is above the frame, or the
    box is arms, hands or a torso. Not when it is cut by a side edge and is narrow (more
    than twice as tall as wide): a raised arm and hand coming in from the side, or a
    sliver of a person whose centre is not their head's. Boxes of crops of the shared
    videos that showed only hands, arms and torsos were all one or the other. A box cut
    at the bottom is fine (a medium shot), and so is a wide one cut by a side (the head
    and shoulders of someone seen from behind in the foreground).
    """
    h, w = frame_size
    x1, y1, x2, y2 = people.xyxy.T
    at_top = y1 <= EDGE_MARGIN * h
    at_side = (x1 <= EDGE_MARGIN * w) | (x2 >= (1 - EDGE_MARGIN) * w)
    narrow = (y2 - y1) > SIDE_CUT_MAX_ASPECT * (x2 - x1)
    return ~at_top & ~(at_side & narrow)


def has_face(person_heads: np.ndarray, face_heads: np.ndarray) -> np.ndarray:
    """Whether each person-derived head has a face-derived head's centre in it (grown by half)."""
    if len(face_heads) == 0:
        return np.zeros(len(person_heads), bool)
    grow = (person_heads[:, 2:] - person_heads[:, :2])[:, None, :] / 2
    lo, hi = person_heads[:, None, :2] - grow, person_heads[:, None, 2:] + grow
    c = (face_heads[None, :, :2] + face_heads[None, :, 2:]) / 2
    return ((c >= lo) & (c <= hi)).all(-1).any(1)


def combine(faces: Detections, people: Detections, frame: int, frame_size: tuple[int, int]) -> Detections:
    """The heads of one image (`frame_size`: its height, width) from its faces and people.

    Heads from person boxes whose head cannot be trusted to be in the frame are kept (they
    count as heads for the rule), marked `data[OUT_OF_FRAME]`: the major_character stage
    does not accept one as the major character's head."""
    face_heads = heads_from_faces(faces)
    person_heads = heads_from_people(people)
    extra = ~has_face(person_heads, face_heads)
    boxes = np.concatenate([face_heads, person_heads[extra]])
    scores = np.concatenate([faces.confidence, people.confidence[extra]])
    out_of_frame = np.concatenate([np.zeros(len(face_heads), bool), ~head_in_frame(people, frame_size)[extra]])
    # NMS in this order: face-derived heads first, whatever their scores.
    priority = np.concatenate([np.full(len(face_heads), 2.0), np.ones(extra.sum())]).astype(np.float32)
    keep = np.sort(nms(boxes, priority + scores / 10, SAME_HEAD_IOU))
    return Detections.of(boxes[keep], scores[keep], HEAD, frame, **{OUT_OF_FRAME: out_of_frame[keep]})


class PersonFaceHeads(Detector):
    """HEAD rows formed from the face and person detectors' rows, returned with them."""

    def __init__(self, faces: Detector, people: Detector) -> None:
        super().__init__()
        self.name = "person_face"
        self.faces, self.people = faces, people
        self.searched = {HEAD: self.name, FACE: faces.name, PERSON: people.name}

    def describe(self) -> str:
        return f"person_face (heads from faces: {self.faces.name} + people: {self.people.name})"

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        faces, people = self.faces.detect(images), self.people.detect(images)
        if "landmarks" not in faces.data:  # none found: say so, so the faces stage reuses "none"
            faces.data["landmarks"] = np.zeros((len(faces), 5, 2), np.float32)
        heads = [combine(faces.in_frame(i), people.in_frame(i), i, img.shape[:2]) for i, img in enumerate(images)]
        return Detections.merge([*heads, faces, people])


@register("head_detector", "person_face", auto=0,
          summary="heads from the face detector + the person detector (the run's own; no GPL file)")
def _person_face(ctx: BackendContext) -> PersonFaceHeads:
    return PersonFaceHeads(ctx.provider.get("face_detector"), ctx.provider.get("person_detector"))
