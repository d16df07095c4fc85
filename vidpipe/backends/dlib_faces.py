"""dlib face detector and embedder: the pip-only default (weights ship in the
face-recognition-models wheel), used when the ONNX weights are not found.

Measured here (2 shared cores, celebrity5_train 71 photos, frames shrunk to <= 640 px):
HOG finds a face in 71/71 photos with one upsampling, 61/71 without; HOG costs 14-18 ms
per 640 px frame without upsampling and 60-80 ms with it; the ResNet descriptor costs
~67 ms per face on CPU and is the dominant cost; leave-one-out 1-NN identification 98.6%.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from vidpipe.backends.base import FACE, Detections, Detector, FaceEmbedder
from vidpipe.registry import BackendContext, register
from vidpipe.util import shrink
from vidpipe.weights import package_dir

# Detector margins -> [0, 1]: score = sigmoid(SCORE_GAIN * margin). dlib's default
# operating point (margin 0) maps to 0.5, the default det_threshold; margin 1 -> 0.88.
SCORE_GAIN = 2.0

# Landmark completion in the eye frame (origin: midpoint of the eye centres; u: left->right
# eye vector; v: u turned 90 degrees, pointing down the face). Offsets are the means of
# SCRFD-500M's landmarks expressed in that frame on the 71 celebrity5_train photos; the
# per-photo spread is ~0.06 (nose) and ~0.1-0.15 (mouth) inter-ocular distances.
NOSE_TIP_ABOVE_BASE = 0.18  # nose tip = dlib nose base - 0.18 v
MOUTH_HALF_WIDTH = 0.46  # mouth corners at +-0.46 u ...
MOUTH_BELOW_BASE = 0.28  # ... and 0.28 v below dlib's nose base


def five_points(parts: np.ndarray) -> np.ndarray:
    """dlib 5-point shape -> insightface order (left eye, right eye, nose, left/right mouth
    as seen in the image).

    dlib's points are two corners of the image-right eye (0, 1), two of the image-left
    eye (2, 3) and the base of the nose (4). Eye centres are corner midpoints; nose tip and
    mouth corners are *estimated* with fixed offsets (see module constants), so only the
    eyes and the nose base are measured.
    """
    e1, e2 = parts[0:2].mean(0), parts[2:4].mean(0)
    left, right = (e1, e2) if e1[0] <= e2[0] else (e2, e1)
    u = right - left
    v = np.array([-u[1], u[0]])
    base = parts[4]
    mid = (left + right) / 2
    base_v = float((base - mid) @ v / max(float(v @ v), 1e-6))
    nose = base - NOSE_TIP_ABOVE_BASE * v
    mouth_v = mid + (base_v + MOUTH_BELOW_BASE) * v
    return np.stack([left, right, nose, mouth_v - MOUTH_HALF_WIDTH * u, mouth_v + MOUTH_HALF_WIDTH * u]).astype(np.float32)


def _dlib():
    import dlib  # big: only when a dlib backend is built

    return dlib


class _DlibModels:
    """The dlib models shared by the detector and the embedder of one process."""

    _instance: "_DlibModels | None" = None

    def __init__(self) -> None:
        dlib = _dlib()
        models = package_dir("face_recognition_models", "face-recognition-models") / "models"
        self.shape_file = models / "shape_predictor_5_face_landmarks.dat"
        self.rec_file = models / "dlib_face_recognition_resnet_model_v1.dat"
        self.cnn_file = models / "mmod_human_face_detector.dat"
        self.shape = dlib.shape_predictor(str(self.shape_file))
        self._rec = None

    @property
    def rec(self):
        if self._rec is None:
            self._rec = _dlib().face_recognition_model_v1(str(self.rec_file))
        return self._rec

    @classmethod
    def get(cls) -> "_DlibModels":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, :, ::-1])


class DlibFaceDetector(Detector):
    """dlib HOG (or CNN) detector + 5-point shape, landmarks completed to insightface's 5.

    Scores: sigmoid(2 x detector margin); ``threshold`` is mapped back to a margin, so 0.5
    is dlib's default operating point. Landmarks: eyes (corner midpoints) and nose base are
    measured; nose tip and mouth corners are approximations (see ``five_points``).
    Detector: "hog" on CPU; "cnn" (dlib's MMOD CNN, much slower on CPU) is chosen by "auto"
    when dlib was built with CUDA and the device allows it.
    """

    def __init__(self, max_side: int = 640, threshold: float = 0.5, device: str = "auto",
                 detector: str = "auto", upsample: int = 1) -> None:
        super().__init__()
        dlib = _dlib()
        self.models = _DlibModels.get()
        if detector == "auto":
            detector = "cnn" if (dlib.DLIB_USE_CUDA and device != "cpu") else "hog"
        if detector not in ("hog", "cnn"):
            raise ValueError(f"dlib detector must be auto, hog or cnn, not {detector!r}")
        self.name = "dlib"
        self.detector_kind = detector
        self.weight_files = [self.models.shape_file] + ([self.models.cnn_file] if detector == "cnn" else [])
        self.max_side, self.upsample = int(max_side), int(upsample)
        self._hog = dlib.get_frontal_face_detector() if detector == "hog" else None
        self._cnn = dlib.cnn_face_detection_model_v1(str(self.models.cnn_file)) if detector == "cnn" else None
        p = min(max(float(threshold), 1e-6), 1 - 1e-6)
        self._margin = math.log(p / (1 - p)) / SCORE_GAIN

    def describe(self) -> str:
        return f"dlib ({self.detector_kind} detector, weights from the face-recognition-models wheel)"

    def _find(self, rgb: np.ndarray) -> tuple[list, np.ndarray]:
        if self._hog is not None:
            rects, margins, _ = self._hog.run(rgb, self.upsample, self._margin)
            return list(rects), np.asarray(margins, np.float64)
        found = self._cnn(rgb, self.upsample)
        keep = [d for d in found if d.confidence >= self._margin]
        return [d.rect for d in keep], np.array([d.confidence for d in keep], np.float64)

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        parts = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            small, scale = shrink(img, self.max_side)
            rgb = _rgb(small)
            rects, margins = self.timed(lambda: self._find(rgb))
            if not rects:
                continue
            order = np.argsort(-margins, kind="stable")
            boxes, lms = [], []
            for j in order:
                r = rects[j]
                parts_xy = np.array([[p.x, p.y] for p in self.models.shape(rgb, r).parts()], np.float32)
                boxes.append([r.left(), r.top(), r.right() + 1, r.bottom() + 1])
                lms.append(five_points(parts_xy))
            b = np.array(boxes, np.float32) / scale
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
            scores = (1.0 / (1.0 + np.exp(-SCORE_GAIN * margins[order]))).astype(np.float32)
            parts.append(Detections.of(b, scores, FACE, i, landmarks=(np.stack(lms) / scale).astype(np.float32)))
        return Detections.merge(parts)


class DlibFaceEmbedder(FaceEmbedder):
    """dlib's 128-d ResNet descriptor over its own 5-point shape of each box.

    Quality: the descriptor is returned unchanged and its L2 norm is the quality column,
    but dlib's descriptor is nearly normalised by construction (norms 1.3-1.7, sd 0.07 on
    celebrity5_train), so ranking faces by quality is weak with this backend: over
    blur/downscale variants of 24 celebrity5 faces, Spearman correlation of the norm with
    cosine-to-the-clean-face is 0.40 (MobileFaceNet-128's raw norm: 0.71).
    """

    def __init__(self) -> None:
        super().__init__()
        self.models = _DlibModels.get()
        self.name = "dlib"
        self.dim = 128
        self.weight_files = [self.models.shape_file, self.models.rec_file]

    def describe(self) -> str:
        return "dlib (128-d ResNet, weights from the face-recognition-models wheel)"

    def embed(self, images: Sequence[np.ndarray], faces: Detections) -> np.ndarray:
        dlib = _dlib()
        out = np.zeros((len(faces), self.dim), np.float32)
        for f in np.unique(faces.frame):
            rows = np.flatnonzero(faces.frame == f)
            rgb = _rgb(images[f])
            shapes = dlib.full_object_detections()
            for x1, y1, x2, y2 in faces.xyxy[rows]:
                rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
                shapes.append(self.models.shape(rgb, rect))
            desc = self.timed(lambda: self.models.rec.compute_face_descriptor(rgb, shapes), len(rows))
            out[rows] = np.array(desc, np.float32).reshape(len(rows), -1)
        return out


@register("face_detector", "dlib", auto=1, summary="dlib HOG (CNN with CUDA) + 5-point shape; weights from PyPI")
def _dlib_detector(ctx: BackendContext) -> DlibFaceDetector:
    return DlibFaceDetector(ctx.options.max_side, ctx.options.det_threshold, ctx.device)


@register("face_embedder", "dlib", auto=1, summary="dlib 128-d ResNet descriptor; weights from PyPI")
def _dlib_embedder(ctx: BackendContext) -> DlibFaceEmbedder:
    return DlibFaceEmbedder()
