"""SCRFD face detector (5 landmarks) and SCRFD person detector, ONNX, loaded through insightface.

Detection size: the image is shrunk (never enlarged) so its long side is at most
``max_side``, then zero-padded at the bottom/right to multiples of 32 and given to
``SCRFD.detect`` with ``input_size`` equal to that padded size. SCRFD.detect letterboxes
by itself (aspect kept, image top-left, rest zero) but *scales the image to fill*
``input_size``, i.e. it enlarges images smaller than the input; padding ourselves makes
its scale exactly 1, so small photos are analysed at their own size (DESIGN.md: detecting
small photos at 640 missed faces) and a 16:9 frame costs 640x384, not 640x640.

The detector runs in one dynamic-shape ONNX Runtime session. insightface 2.1 would
otherwise build a static-shape session per input size (measured ~14 MB and ~70 ms each,
never evicted: unbounded for photo folders of mixed sizes); the speed is the same
(640x384: 4.3 ms static vs 4.6 ms dynamic here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vidpipe.backends._onnx import onnx_providers, session_options
from vidpipe.backends.base import FACE, PERSON, Detections, Detector
from vidpipe.registry import BackendContext, register
from vidpipe.util import shrink

STRIDE = 32  # the face models' coarsest feature stride: input sides must be multiples of it


def detector_input(img: np.ndarray, max_side: int, stride: int = STRIDE) -> tuple[np.ndarray, float]:
    """(image shrunk to long side <= max_side and zero-padded to multiples of `stride`, scale)."""
    img, scale = shrink(img, max_side)
    h2, w2 = img.shape[:2]
    ph, pw = -(-h2 // stride) * stride, -(-w2 // stride) * stride
    if (ph, pw) != (h2, w2):
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[:h2, :w2] = img
        img = padded
    return img, scale


class ScrfdFaceDetector(Detector):
    """SCRFD from an ONNX file: boxes, scores and 5 landmarks (eyes, nose, mouth corners)."""

    kind = FACE
    stride = STRIDE

    def __init__(self, path: Path, max_side: int = 640, threshold: float = 0.5,
                 device: str = "auto", threads: int = 0) -> None:
        super().__init__()
        from insightface.model_zoo import get_model
        from insightface.model_zoo.scrfd import SCRFD

        model = get_model(str(path), providers=onnx_providers(device), sess_options=session_options(threads),
                          static_shape_sessions=False)
        if not isinstance(model, SCRFD) or not model.use_kps:
            raise ValueError(f"{path} is not an SCRFD detector with keypoints")
        self.name = "scrfd" if self.kind == FACE else "scrfd_person"
        self.model = model
        self.max_side, self.threshold = int(max_side), float(threshold)
        self.weight_files = [Path(path)]
        self.providers = list(model.session.get_providers())

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        parts = []
        for i, img in enumerate(images):
            inp, scale = detector_input(img, self.max_side, self.stride)
            h, w = inp.shape[:2]
            det, kps = self.timed(lambda: self.model.detect(inp, input_size=(w, h), det_thresh=self.threshold))
            if len(det) == 0:
                continue
            boxes = det[:, :4] / scale
            ih, iw = img.shape[:2]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, iw)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, ih)
            extra = {"landmarks": (kps / scale).astype(np.float32)} if self.kind == FACE else {}
            parts.append(Detections.of(boxes, det[:, 4], self.kind, i, **extra))
        return Detections.merge(parts)


class ScrfdPersonDetector(ScrfdFaceDetector):
    """insightface's SCRFD person detector (scrfd_person_2.5g): five feature strides up to
    128, so inputs are padded to multiples of 128; its 5 keypoints are dropped."""

    kind = PERSON
    stride = 128


@register("face_detector", "scrfd", auto=0, summary="SCRFD ONNX (faces.detector_weights: scrfd_500m, scrfd_2.5g, det_10g)")
def _scrfd(ctx: BackendContext) -> ScrfdFaceDetector:
    o = ctx.options
    return ScrfdFaceDetector(ctx.weights(o.detector_weights), o.max_side, o.det_threshold, ctx.device, ctx.threads)


@register("person_detector", "scrfd_person", auto=1,
          summary="SCRFD person 2.5G ONNX (insightface model zoo: non-commercial research)")
def _scrfd_person(ctx: BackendContext) -> ScrfdPersonDetector:
    o = ctx.options
    return ScrfdPersonDetector(ctx.weights("scrfd_person_2.5g"), o.max_side, o.det_threshold, ctx.device, ctx.threads)
