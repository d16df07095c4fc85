"""Torch device for every torch backend: CUDA when asked for, or on "auto" when torch sees
a GPU; the CPU otherwise (with a warning when CUDA was asked for but is not there)."""

from __future__ import annotations

import logging

from vidpipe.config import ConfigError
from vidpipe.registry import log_once


def torch_device(device: str = "auto"):
    """torch.device for `device` ("auto" | "cpu" | "cuda" | "cuda:N")."""
    import torch

    device = (device or "auto").lower()
    if device == "cpu":
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            log_once(logging.WARNING, "device %s asked for, but torch sees no CUDA device; "
                     "torch models will run on CPU", device)
            return torch.device("cpu")
        return torch.device(device)
    raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")
