"""PINTO0309's YOLOv9-n "wholebody15" (ONNX, GPL-3.0): heads, faces and bodies in one net.

The graph (checked with `onnx`): input `input_bgr` [1, 3, H, W], BGR 0-255 float, any size;
it resizes to 480x640 itself (nearest), swaps to RGB and divides by 255. Output
[N, 7] = batch, class, score, x1, y1, x2, y2 in that 640x480 space, after NMS inside the
graph (IoU 0.4, score 0.25, at most `main01_max_output_boxes_per_class` = 20 boxes per
class). Classes seen on real photos: 0 body, 1 adult, 2 child, 5 head, 6 face, 7 eye,
8 nose, 9 mouth, 10 ear, 11-13 hands. We resize to 640x480 ourselves (area filter, not
nearest) so the graph's own resize is the identity, and raise the per-class cap in memory
at load time, so a crowd of more than 20 heads is counted whole.

GPL-3.0: never chosen by "auto"; only `major_character.detector = "wholebody"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from vidpipe.backends._onnx import session
from vidpipe.backends.base import FACE, HEAD, PERSON, Detections, Detector
from vidpipe.registry import BackendContext, register

INPUT_W, INPUT_H = 640, 480
CLASSES = {0: PERSON, 5: HEAD, 6: FACE}  # the graph's class ids -> our kinds
CAP = "main01_max_output_boxes_per_class"


def with_cap(path: Path, max_per_class: int) -> bytes:
    """The model file with its NMS cap per class set to `max_per_class`."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == CAP:
            init.CopyFrom(numpy_helper.from_array(np.array([max_per_class], np.int64), CAP))
            return model.SerializeToString()
    raise ValueError(f"{path} has no {CAP} initializer: not the wholebody15 post-NMS graph")


class WholebodyDetector(Detector):
    """Heads (and the faces and bodies it finds with them) from one YOLOv9 call per image."""

    def __init__(self, path: Path, threshold: float = 0.4, max_per_class: int = 100,
                 device: str = "auto", threads: int = 0) -> None:
        super().__init__()
        self.name = "wholebody"
        self.session = session(with_cap(Path(path), max_per_class), device, threads)
        self.threshold = float(threshold)
        self.weight_files = [Path(path)]

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        parts = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            x = cv2.resize(img, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA if w > INPUT_W else cv2.INTER_LINEAR)
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)
            out = self.timed(lambda: self.session.run(None, {"input_bgr": x})[0])
            keep = np.isin(out[:, 1], list(CLASSES)) & (out[:, 2] >= self.threshold)
            out = out[keep]
            boxes = out[:, 3:7] * np.array([w / INPUT_W, h / INPUT_H] * 2, np.float32)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            kinds = np.array([CLASSES[int(c)] for c in out[:, 1]], np.int8)
            parts.append(Detections(boxes, out[:, 2], kinds, i))
        return Detections.merge(parts)


@register("head_detector", "wholebody", auto=None,
          summary="YOLOv9-n wholebody15 ONNX: heads+faces+bodies (GPL-3.0: only by name)")
def _wholebody(ctx: BackendContext) -> WholebodyDetector:
    o = ctx.options
    return WholebodyDetector(ctx.weights("yolov9_n_wholebody15"), o.det_threshold, o.max_per_class,
                             ctx.device, ctx.threads)
