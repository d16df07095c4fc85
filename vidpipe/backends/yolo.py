"""The YOLO family: YOLOX-nano people (Apache-2.0), and user YOLO models for heads.

- `yolox` (person_detector): YOLOX-nano ONNX, COCO class 0. The exported graph stops
  before the box decoding (no grid, no exp): decoded here. Input: BGR 0-255 letterboxed to
  416x416 at the top left, padded with 114 (checked on real photos: ImageNet-normalised
  RGB input finds nothing).
- `yolo_onnx` (head_detector): an Ultralytics-format model exported to ONNX, output
  [1, 4 + classes, N] (cx, cy, w, h in input pixels, then per-class scores); input RGB
  0-1 letterboxed (centred, padded with 114) to the graph's input size. Decoding and NMS
  in numpy/OpenCV, so no torch or torchvision is needed. `major_character.model_path`
  names the file, `major_character.head_class` the class index of heads.
- `yolo_pt` (head_detector): the same kind of model as a `.pt` file, run by Ultralytics
  (`pip install vidpipe[yolo]`, AGPL-3.0; it needs a torchvision that imports). It runs
  offline (YOLO_OFFLINE=1 before the import).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from vidpipe.backends._onnx import InputBuffer, free_batch, session
from vidpipe.backends.base import HEAD, PERSON, Detections, Detector
from vidpipe.config import ConfigError
from vidpipe.registry import BackendContext, register

PAD_VALUE = 114  # the grey both YOLOX and Ultralytics pad with
NMS_IOU = 0.45


def letterbox(img: np.ndarray, size: tuple[int, int], centre: bool) -> tuple[np.ndarray, float, tuple[float, float]]:
    """`img` scaled to fit (h, w) = `size`, aspect kept, padded with grey:
    (canvas, scale, (x offset, y offset)); canvas pixels = image pixels * scale + offset."""
    h, w = img.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    dy, dx = ((size[0] - nh) // 2, (size[1] - nw) // 2) if centre else (0, 0)
    canvas = np.full((size[0], size[1], 3), PAD_VALUE, np.uint8)
    canvas[dy:dy + nh, dx:dx + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return canvas, scale, (dx, dy)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by non-maximum suppression (OpenCV's), best first."""
    if len(boxes) == 0:
        return np.zeros(0, int)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    return np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou), int).reshape(-1)


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], 1)


def to_image(boxes: np.ndarray, scale: float, offset: tuple[float, float], shape: tuple[int, ...]) -> np.ndarray:
    """Boxes from letterboxed-input pixels back to the image's, clipped to it."""
    out = (boxes - np.array([*offset, *offset], np.float32)) / scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return out.astype(np.float32)


def _batch_kept(node, constants, numpy_helper) -> bool:
    """YOLOX's heads reshape to (1, 85, -1), folding a batch into the boxes; (0, 85, -1)
    keeps the batch axis (0: the input's size), the same for one image."""
    if node.op_type != "Reshape" or node.input[1] not in constants:
        return False
    shape = numpy_helper.to_array(constants[node.input[1]])
    if shape.ndim != 1 or len(shape) != 3 or shape[0] != 1 or shape[2] != -1:
        return False
    constants[node.input[1]].CopyFrom(numpy_helper.from_array(np.array([0, *shape[1:]], shape.dtype), node.input[1]))
    return True


class YoloxPersonDetector(Detector):
    """YOLOX-nano: people (COCO class 0). The exported graph's batch is 1; it is loaded with a
    free batch (`_batch_kept`), so a `detect` call is one network call."""

    STRIDES = (8, 16, 32)

    def __init__(self, path: Path, threshold: float = 0.5, device: str = "auto", threads: int = 0) -> None:
        super().__init__()
        self.name = "yolox"
        graph = free_batch(path, _batch_kept)
        self.batched = graph is not None
        self.session = session(graph if self.batched else path, device, threads)
        inp = self.session.get_inputs()[0]
        self.input_name, self.size = inp.name, (int(inp.shape[2]), int(inp.shape[3]))
        self.threshold = float(threshold)
        self.weight_files = [Path(path)]
        self._input = InputBuffer()
        grids, strides = [], []
        for s in self.STRIDES:
            gy, gx = np.meshgrid(np.arange(self.size[0] // s), np.arange(self.size[1] // s), indexing="ij")
            grids.append(np.stack([gx, gy], -1).reshape(-1, 2))
            strides.append(np.full((gx.size, 1), s))
        self.grid, self.stride = np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        if not images:
            return Detections.empty()
        boxed = [letterbox(img, self.size, centre=False) for img in images]
        x = self._input.view((len(images), 3, *self.size))
        for planes, (canvas, _, _) in zip(x, boxed):  # HWC uint8 -> CHW float32, no stacked copy first
            planes[...] = canvas.transpose(2, 0, 1)
        if self.batched:
            outs = self.timed(lambda: self.session.run(None, {self.input_name: x})[0], len(images))
        else:
            outs = [self.timed(lambda: self.session.run(None, {self.input_name: x[i : i + 1]})[0][0])
                    for i in range(len(images))]
        parts = []
        for i, (img, (_, scale, offset), out) in enumerate(zip(images, boxed, outs)):
            score = out[:, 4] * out[:, 5]  # objectness x person
            keep = score >= self.threshold
            out, score = out[keep], score[keep]
            xy = (out[:, :2] + self.grid[keep]) * self.stride[keep]
            wh = np.exp(out[:, 2:4]) * self.stride[keep]
            boxes = cxcywh_to_xyxy(np.concatenate([xy, wh], 1))
            idx = nms(boxes, score)
            parts.append(Detections.of(to_image(boxes[idx], scale, offset, img.shape), score[idx], PERSON, i))
        return Detections.merge(parts)


class YoloOnnxDetector(Detector):
    """An Ultralytics-format ONNX detector; rows of class `cls` become `kind` rows."""

    def __init__(self, path: Path, cls: int, kind: int = HEAD, threshold: float = 0.4, input_size: int = 640,
                 device: str = "auto", threads: int = 0) -> None:
        super().__init__()
        self.name = "yolo_onnx"
        self.session = session(path, device, threads)
        inp = self.session.get_inputs()[0]
        h, w = inp.shape[2:4]
        self.input_name = inp.name
        self.size = (h if isinstance(h, int) else input_size, w if isinstance(w, int) else input_size)
        self.cls, self.kind, self.threshold = int(cls), kind, float(threshold)
        self.weight_files = [Path(path)]
        out = self.session.get_outputs()[0].shape
        if len(out) == 3 and all(isinstance(d, int) for d in out[1:]) and not 0 <= self.cls < min(out[1:]) - 4:
            raise ConfigError(f"head class {self.cls} is not among the {min(out[1:]) - 4} classes of {Path(path).name}")

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        parts = []
        for i, img in enumerate(images):
            canvas, scale, offset = letterbox(img, self.size, centre=True)
            x = np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255.0
            out = self.timed(lambda: self.session.run(None, {self.input_name: x})[0][0])
            if out.shape[0] > out.shape[1]:  # [N, 4 + classes]: some exports put rows first
                out = out.T
            score = out[4 + self.cls]
            keep = score >= self.threshold
            boxes = cxcywh_to_xyxy(out[:4, keep].T)
            idx = nms(boxes, score[keep])
            parts.append(Detections.of(to_image(boxes[idx], scale, offset, img.shape), score[keep][idx], self.kind, i))
        return Detections.merge(parts)


class UltralyticsDetector(Detector):
    """Any model Ultralytics loads (.pt …), through its predictor (needs torchvision)."""

    def __init__(self, path: Path, cls: int, kind: int = HEAD, threshold: float = 0.4, device: str = "auto") -> None:
        super().__init__()
        os.environ.setdefault("YOLO_OFFLINE", "1")  # before the import: no network checks, no analytics
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ConfigError(f"yolo_pt needs Ultralytics: pip install 'vidpipe[yolo]' ({e})") from None
        self.name = "yolo_pt"
        self.model = YOLO(str(path))
        self.cls, self.kind, self.threshold = int(cls), kind, float(threshold)
        self.device = None if device == "auto" else device
        self.weight_files = [Path(path)]

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        results = self.timed(lambda: self.model.predict(list(images), conf=self.threshold, classes=[self.cls],
                                                        device=self.device, verbose=False), len(images))
        return Detections.merge([
            Detections.of(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(), self.kind, i)
            for i, r in enumerate(results)
        ])


def _model_path(ctx: BackendContext, suffixes: tuple[str, ...]) -> Path:
    path = ctx.options.model_path
    if not path:
        raise ConfigError("set major_character.model_path to the YOLO model file")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"YOLO model file {p} not found")
    if p.suffix.lower() not in suffixes:
        raise ConfigError(f"{p.name}: expected a {' or '.join(suffixes)} file")
    return p


@register("person_detector", "yolox", auto=0, summary="YOLOX-nano ONNX, COCO people (Apache-2.0)")
def _yolox(ctx: BackendContext) -> YoloxPersonDetector:
    return YoloxPersonDetector(ctx.weights("yolox_nano"), ctx.options.det_threshold, ctx.device, ctx.threads)


@register("head_detector", "yolo_onnx", auto=None,
          summary="your Ultralytics-format ONNX model (major_character.model_path, .head_class)")
def _yolo_onnx(ctx: BackendContext) -> YoloOnnxDetector:
    o = ctx.options
    return YoloOnnxDetector(_model_path(ctx, (".onnx",)), o.head_class, HEAD, o.det_threshold, 640,
                            ctx.device, ctx.threads)


@register("head_detector", "yolo_pt", auto=None,
          summary="your Ultralytics .pt model, run by Ultralytics (vidpipe[yolo], AGPL-3.0)")
def _yolo_pt(ctx: BackendContext) -> UltralyticsDetector:
    o = ctx.options
    return UltralyticsDetector(_model_path(ctx, (".pt",)), o.head_class, HEAD, o.det_threshold, ctx.device)
