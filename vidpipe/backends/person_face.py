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


def has_face(person_heads: np.ndarray, face_heads: np.ndarray) -> np.ndarray:
    """Whether each person-derived head has a face-derived head's centre in it (grown by half)."""
    if len(face_heads) == 0:
        return np.zeros(len(person_heads), bool)
    grow = (person_heads[:, 2:] - person_heads[:, :2])[:, None, :] / 2
    lo, hi = person_heads[:, None, :2] - grow, person_heads[:, None, 2:] + grow
    c = (face_heads[None, :, :2] + face_heads[None, :, 2:]) / 2
    return ((c >= lo) & (c <= hi)).all(-1).any(1)


def combine(faces: Detections, people: Detections, frame: int) -> Detections:
    """The heads of one image from its faces and people."""
    face_heads = heads_from_faces(faces)
    person_heads = heads_from_people(people)
    extra = ~has_face(person_heads, face_heads)
    boxes = np.concatenate([face_heads, person_heads[extra]])
    scores = np.concatenate([faces.confidence, people.confidence[extra]])
    # NMS in this order: face-derived heads first, whatever their scores.
    priority = np.concatenate([np.full(len(face_heads), 2.0), np.ones(extra.sum())]).astype(np.float32)
    keep = np.sort(nms(boxes, priority + scores / 10, SAME_HEAD_IOU))
    return Detections.of(boxes[keep], scores[keep], HEAD, frame)


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
        heads = [combine(faces.in_frame(i), people.in_frame(i), i) for i in range(len(images))]
        return Detections.merge([*heads, faces, people])


@register("head_detector", "person_face", auto=0,
          summary="heads from the face detector + the person detector (the run's own; no GPL file)")
def _person_face(ctx: BackendContext) -> PersonFaceHeads:
    return PersonFaceHeads(ctx.provider.get("face_detector"), ctx.provider.get("person_detector"))
