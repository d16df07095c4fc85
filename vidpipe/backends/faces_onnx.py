"""SCRFD face detector + ArcFace-style embedder, both ONNX, loaded through insightface.

Detection size: the image is shrunk (never enlarged) so its long side is at most
``cfg.max_side``, then zero-padded at the bottom/right to multiples of 32 and given to
``SCRFD.detect`` with ``input_size`` equal to that padded size. SCRFD.detect letterboxes
by itself (aspect kept, image top-left, rest zero) but *scales the image to fill*
``input_size``, i.e. it enlarges images smaller than the input; padding ourselves makes
its scale exactly 1, so small photos are analysed at their own size (DESIGN.md: detecting
small photos at 640 missed faces) and a 16:9 frame costs 640x384, not 640x640.

The detector runs in one dynamic-shape ONNX Runtime session. insightface 2.1 would
otherwise build a static-shape session per input size (measured ~14 MB and ~70 ms each,
never evicted: unbounded for photo folders of mixed sizes); the speed is the same
(640x384: 4.3 ms static vs 4.6 ms dynamic here). The dynamic session logs an ORT warning
per output per call about the graph's 640x640 output shapes, hence log level ERROR.

Embedding: 5-point similarity alignment to insightface's 112x112 ArcFace template, then
``ArcFaceONNX.get_feat`` in batches of ``cfg.batch_size``. Embeddings stay raw: their L2
norm is the quality score. Preprocessing is insightface's inferred default for both
MobileFaceNet files (RGB, (x - 127.5) / 127.5); measured on celebrity5_train (71 faces,
5 people, leave-one-out 1-NN): mobilefacenet_128d 98.6% (mean same-person cosine 0.57,
different-person -0.01); mobilefacenet_128d_paddle 98.6% (0.55 / -0.01; BGR input gives
0.58 / -0.03, within noise). Without the mean/std (raw 0..255) both drop to 61-70%.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import onnxruntime as ort
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils.face_align import arcface_dst

from vidpipe.backends.base import Detections, FaceBackend
from vidpipe.config import FacesConfig

log = logging.getLogger("vidpipe")

STRIDE = 32  # SCRFD's coarsest feature stride: input sides must be multiples of it


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) src -> dst.

    Umeyama's method, as skimage's SimilarityTransform.estimate that insightface's
    norm_crop calls; done here because that skimage API is deprecated (removal due in
    skimage 2.2) and warns on every face.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(img: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    """Crop of `img` warped so the 5 landmarks sit on the ArcFace template (= norm_crop)."""
    m = similarity_transform(kps, arcface_dst * (size / 112.0))
    return cv2.warpAffine(img, m, (size, size), borderValue=0.0)


def detector_input(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(image shrunk to long side <= max_side and zero-padded to multiples of 32, scale)."""
    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    h2, w2 = img.shape[:2]
    ph, pw = -(-h2 // STRIDE) * STRIDE, -(-w2 // STRIDE) * STRIDE
    if (ph, pw) != (h2, w2):
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[:h2, :w2] = img
        img = padded
    return img, scale


def _session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # ERROR: see the module docstring
    return so


class ScrfdArcFaceBackend(FaceBackend):
    """SCRFD (5 landmarks) + ArcFace-style embedder from two ONNX files."""

    def __init__(self, detector_path: Path, embedder_path: Path, cfg: FacesConfig,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        det = get_model(str(detector_path), providers=list(providers), sess_options=_session_options(),
                        static_shape_sessions=False)
        rec = get_model(str(embedder_path), providers=list(providers), sess_options=_session_options())
        if not isinstance(det, SCRFD) or not det.use_kps:
            raise ValueError(f"{detector_path} is not an SCRFD face detector with landmarks")
        if not isinstance(rec, ArcFaceONNX):
            raise ValueError(f"{embedder_path} is not an ArcFace-style 112x112 embedder")
        dim = rec.output_shape[-1]
        super().__init__(name="scrfd", embedding_dim=int(dim), weight_files=[Path(detector_path), Path(embedder_path)])
        self.cfg = cfg
        self.detector = det
        self.embedder = rec
        self.providers = list(det.session.get_providers())

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out: list[Detections] = []
        for img in images:
            inp, scale = detector_input(img, self.cfg.max_side)
            h, w = inp.shape[:2]
            det, kps = self.detector.detect(inp, input_size=(w, h), det_thresh=self.cfg.det_threshold)
            if len(det) == 0:
                out.append(Detections.empty())
                continue
            boxes = det[:, :4] / scale
            ih, iw = img.shape[:2]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, iw)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, ih)
            out.append(Detections(boxes.astype(np.float32), det[:, 4].astype(np.float32),
                                  (kps / scale).astype(np.float32)))
        return out

    def embed(self, images: Sequence[np.ndarray], detections: Sequence[Detections]) -> list[np.ndarray]:
        if len(images) != len(detections):
            raise ValueError(f"{len(images)} images but {len(detections)} detection sets")
        crops: list[np.ndarray] = []
        counts: list[int] = []
        for img, d in zip(images, detections):
            if len(d) and d.landmarks is None:
                raise ValueError("SCRFD/ArcFace embedding needs 5-point landmarks")
            counts.append(len(d))
            crops.extend(align_face(img, k, self.embedder.input_size[0]) for k in (d.landmarks if len(d) else []))
        feats = np.zeros((len(crops), self.embedding_dim), np.float32)
        bs = max(1, int(self.cfg.batch_size))
        for i in range(0, len(crops), bs):
            feats[i:i + bs] = self.embedder.get_feat(crops[i:i + bs])
        return list(np.split(feats, np.cumsum(counts)[:-1])) if counts else []
