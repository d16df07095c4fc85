"""Torch device for every torch backend: CUDA when asked for, or on "auto" when torch sees
a GPU; the CPU otherwise (with a warning when CUDA was asked for but is not there)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

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


@contextlib.contextmanager
def one_thread_on_cpu(device) -> Iterator[None]:
    """Torch on one thread inside the block when `device` is the CPU. For recurrent nets
    (GE2E's LSTM, Light-ASD's GRU): each step is a small matrix product that threads cannot
    split usefully, and their barriers collapse on busy cores (GE2E, 64 partials: 22-75 ms
    each on one thread, 340-640 ms on two, on this 2-core machine at load 10)."""
    import torch

    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
