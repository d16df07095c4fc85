"""ArcFace-style face embedder (112x112 aligned crop -> embedding), ONNX via insightface.

5-point similarity alignment to insightface's 112x112 ArcFace template, then
``ArcFaceONNX.get_feat`` in batches. Embeddings stay raw: their L2 norm is the quality
score. Preprocessing is insightface's inferred default for both MobileFaceNet files (RGB,
(x - 127.5) / 127.5); measured on celebrity5_train (71 faces, 5 people, leave-one-out
1-NN): mobilefacenet_128d 98.6% (mean same-person cosine 0.57, different-person -0.01);
mobilefacenet_128d_paddle 98.6% (0.55 / -0.01). Without the mean/std (raw 0..255) both
drop to 61-70%.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from vidpipe.backends._onnx import onnx_providers, session_options
from vidpipe.backends.base import Detections, FaceEmbedder
from vidpipe.registry import BackendContext, register

def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) src -> dst.

    Umeyama's method, as skimage's SimilarityTransform.estimate that insightface's
    norm_crop calls; done here because that skimage API is deprecated and warns per face.
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
    from insightface.utils.face_align import arcface_dst  # the 112x112 template

    m = similarity_transform(kps, arcface_dst * (size / 112.0))
    return cv2.warpAffine(img, m, (size, size), borderValue=0.0)


class ArcFaceEmbedder(FaceEmbedder):
    """ArcFace-style ONNX embedder; needs 5-point landmarks in `faces.data['landmarks']`."""

    def __init__(self, path: Path, batch_size: int = 32, device: str = "auto", threads: int = 0) -> None:
        super().__init__()
        from insightface.model_zoo import get_model
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        model = get_model(str(path), providers=onnx_providers(device), sess_options=session_options(threads))
        if not isinstance(model, ArcFaceONNX):
            raise ValueError(f"{path} is not an ArcFace-style 112x112 embedder")
        self.name = "arcface"
        self.model = model
        self.dim = int(model.output_shape[-1])
        self.batch_size = max(1, int(batch_size))
        self.weight_files = [Path(path)]

    def embed(self, images: Sequence[np.ndarray], faces: Detections) -> np.ndarray:
        if len(faces) and "landmarks" not in faces.data:
            raise ValueError("ArcFace embedding needs 5-point landmarks")
        size = self.model.input_size[0]
        crops = [align_face(images[f], k, size) for f, k in zip(faces.frame, faces.data.get("landmarks", []))]
        feats = np.zeros((len(crops), self.dim), np.float32)
        for i in range(0, len(crops), self.batch_size):
            batch = crops[i : i + self.batch_size]
            feats[i : i + len(batch)] = self.timed(lambda: self.model.get_feat(batch), len(batch))
        return feats


@register("face_embedder", "arcface", auto=0,
          summary="ArcFace-style ONNX (faces.embedder_weights: mobilefacenet_128d, w600k_r50, …)")
def _arcface(ctx: BackendContext) -> ArcFaceEmbedder:
    o = ctx.options
    return ArcFaceEmbedder(ctx.weights(o.embedder_weights), o.batch_size, ctx.device, ctx.threads)
