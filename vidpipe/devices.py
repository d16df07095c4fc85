"""Where the models run (`--device auto|cpu|cuda`) and how big their batches are there.

"auto" means CUDA when this machine has it: ONNX Runtime with its CUDA provider (the
`onnxruntime-gpu` build) or torch built with CUDA and seeing a GPU. ONNX backends take their
providers from `vidpipe.backends._onnx.onnx_providers`, torch backends their device from
`vidpipe.backends._torch.torch_device`. On CUDA, every stage's `batch_size` left at its default is multiplied by
`GPU_BATCH_FACTOR`, and so is `run.batch_frames` (clips handed to the stages together): the
same code, bigger batches. Batch sizes change speed, not rows, so
they are not part of the config hash (a store made on CPUs resumes on GPUs).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any

from vidpipe.config import Config, ConfigError, RunConfig

# What a GPU driver makes on Linux (NVIDIA; AMD's ROCm, which torch.cuda also drives; WSL2).
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
GPU_BATCH_FACTOR = 8  # faces: 32 frames per detector call on the CPU, 256 on a GPU


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether ONNX Runtime or torch can run on a CUDA GPU here."""
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return True
    except ImportError:
        pass
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_DEVICE_FILES):
        return False  # no GPU driver here: torch could not see one, and importing it takes 1 s
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def resolve(device: str) -> str:
    """"cuda" or "cpu" (a "cuda:N" stays as it is)."""
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cpu" or device.startswith("cuda"):
        return device
    raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")


def with_device_batches(cfg: Config) -> Config:
    """`cfg` with the active stages' default batch sizes scaled for the device they run on
    (unchanged on the CPU; a copy otherwise)."""
    if not resolve(cfg.run.device).startswith("cuda"):
        return cfg
    scaled = Config.from_dict(cfg.to_dict())
    if scaled.run.batch_frames == RunConfig.batch_frames:
        scaled.run.batch_frames *= GPU_BATCH_FACTOR
    for name in scaled.stage_names():
        section = scaled.section(name)
        defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(section)}
        if isinstance(defaults.get("batch_size"), int) and section.batch_size == defaults["batch_size"]:
            section.batch_size = defaults["batch_size"] * GPU_BATCH_FACTOR
    return scaled
