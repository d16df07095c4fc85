"""Face backends by name: "scrfd" (SCRFD + ArcFace-style ONNX), "dlib", or "auto".

"auto" prefers SCRFD when both of its weights files are found, and otherwise falls back
to dlib, whose weights ship with pip; it says which it chose, and why, once per process.
"""

from __future__ import annotations

import logging
import os

import onnxruntime as ort

from vidpipe.backends.base import FaceBackend
from vidpipe.config import ConfigError, FacesConfig
from vidpipe.weights import WeightsNotFound, resolve

log = logging.getLogger("vidpipe")

BACKENDS = ("auto", "scrfd", "dlib")
_said: set[str] = set()


def _log_once(level: int, msg: str, *args: object) -> None:
    text = msg % args
    if text not in _said:
        _said.add(text)
        log.log(level, text)


def onnx_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for `device` ("auto" | "cpu" | "cuda" | "cuda:N").

    CUDA first (CPU as fallback) when asked for, or on "auto" when this onnxruntime has
    the CUDA provider; CPU only otherwise.
    """
    device = (device or "auto").lower()
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if not cuda_ok:
            _log_once(logging.WARNING, "device %s asked for, but this onnxruntime has no CUDA provider "
                       "(install onnxruntime-gpu); ONNX models will run on CPU", device)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_ok else ["CPUExecutionProvider"]
    raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")


def load_face_backend(cfg: FacesConfig, device: str = "auto",
                      weights_dir: str | os.PathLike[str] | None = None) -> FaceBackend:
    """The face backend `cfg.backend` names; raises WeightsError (one line) for "scrfd"
    without its weights, ConfigError for an unknown name."""
    kind = cfg.backend
    if kind not in BACKENDS:
        raise ConfigError(f"faces.backend must be one of {', '.join(BACKENDS)}, not {kind!r}")
    if kind == "dlib":
        return _dlib(cfg, device)
    if kind == "scrfd":
        return _scrfd(cfg, device, weights_dir)
    try:
        det = resolve(cfg.detector_weights, weights_dir)
        emb = resolve(cfg.embedder_weights, weights_dir)
    except WeightsNotFound as e:  # a corrupt file is not a reason to switch: it raises
        backend = _dlib(cfg, device)
        _log_once(logging.INFO, "face backend: dlib (%s detector), because %s", backend.detector_kind, e)
        return backend
    backend = _scrfd(cfg, device, weights_dir, det, emb)
    _log_once(logging.INFO, "face backend: scrfd (%s + %s, %s) found in %s", cfg.detector_weights, cfg.embedder_weights,
               backend.providers[0], det.parent)
    return backend


def _dlib(cfg: FacesConfig, device: str):  # -> DlibFaceBackend (imported lazily: dlib is big)
    from vidpipe.backends.faces_dlib import DlibFaceBackend

    return DlibFaceBackend(cfg, device=device)


def _scrfd(cfg: FacesConfig, device: str, weights_dir, det=None, emb=None):  # -> ScrfdArcFaceBackend
    from vidpipe.backends.faces_onnx import ScrfdArcFaceBackend

    det = det or resolve(cfg.detector_weights, weights_dir)
    emb = emb or resolve(cfg.embedder_weights, weights_dir)
    return ScrfdArcFaceBackend(det, emb, cfg, providers=onnx_providers(device))
