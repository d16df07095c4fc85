"""OpenCV's HOG people detector (Dalal-Triggs linear SVM, compiled into opencv-python 4.x):
the pip-only person detector, used when no ONNX person weights are found.

Its window is 64x128, so people shorter than ~100 px are missed; frames are enlarged by
`UPSCALE` first (measured on vtest frames, pedestrians 60-90 px tall: 1 of 5-6 found at
1x, most at 2x; 120-200 ms per 640 px frame at 2x on 2 cores). Scores are the SVM margin
through a sigmoid, shifted so that the bodies' default `det_threshold` (0.4) keeps
margins >= 1.35: pedestrians on vtest score 1.2-4.8, false hits on close-up photos
(a face, a shoulder, a chair) 0.5-1.3.
OpenCV 5 moved HOG out of the main package; vidpipe pins opencv-python < 5.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from vidpipe.backends.base import PERSON, Detections, Detector
from vidpipe.registry import BackendContext, register
from vidpipe.weights import WeightsNotFound

UPSCALE = 2.0
MARGIN_OFFSET = 1.75  # score = sigmoid(margin - 1.75): det_threshold 0.4 keeps margins >= 1.35


class HogPersonDetector(Detector):
    """Upright, mostly whole people; one HOG pass per image."""

    def __init__(self, threshold: float = 0.5, upscale: float = UPSCALE) -> None:
        super().__init__()
        if not hasattr(cv2, "HOGDescriptor"):
            raise WeightsNotFound(f"OpenCV {cv2.__version__} has no HOG people detector (it left the main "
                                  "package in 5.0): pip install 'opencv-python<5'")
        self.name = "hog"
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.threshold, self.upscale = float(threshold), float(upscale)

    def describe(self) -> str:
        return f"hog (OpenCV {cv2.__version__} HOG people detector, inside opencv-python)"

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        parts = []
        for i, img in enumerate(images):
            big = cv2.resize(img, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
            if big.shape[1] < self.hog.winSize[0] or big.shape[0] < self.hog.winSize[1]:
                continue  # no person fits; OpenCV 4 segfaults on an image smaller than its window
            rects, margins = self.timed(lambda: self.hog.detectMultiScale(big, winStride=(8, 8), padding=(8, 8), scale=1.05))
            if len(rects) == 0:
                continue
            score = 1.0 / (1.0 + np.exp(-(np.ravel(margins) - MARGIN_OFFSET)))
            boxes = np.asarray(rects, np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            keep = score >= self.threshold
            boxes = boxes[keep] / self.upscale
            h, w = img.shape[:2]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            parts.append(Detections.of(boxes, score[keep], PERSON, i))
        return Detections.merge(parts)


@register("person_detector", "hog", auto=2, summary="OpenCV HOG people detector (inside opencv-python; pip-only)")
def _hog(ctx: BackendContext) -> HogPersonDetector:
    return HogPersonDetector(ctx.options.det_threshold)
