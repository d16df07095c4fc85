"""Where and how the networks run: device choice, bf16 autocast on CUDA, batched scoring."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vidpipe.models.config import ModalitySpec
from vidpipe.models.data import ClipSet, DataError


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise DataError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype the networks' matmuls run in: bfloat16 on CUDA (no loss scaling needed)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to :func:`compute_dtype` on CUDA; plain float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=compute_dtype(device))
    return contextlib.nullcontext()


@torch.inference_mode()
def probabilities(nets: Sequence[nn.Module], specs: Sequence[ModalitySpec], data: ClipSet, device: torch.device,
                  frames: int = 32, batch_size: int = 512) -> np.ndarray:
    """(clips, classes) softmax probabilities, averaged over ``nets`` (an ensemble sums its
    members' distributions, iQIYI §6.4; dividing keeps the scale a probability). Each clip
    is seen through its ``frames`` best frames."""
    if not {s.name for s in specs} & set(data.banks):
        raise DataError(f"the data hold none of the model's modalities ({', '.join(s.name for s in specs)})")
    was_training = [net.training for net in nets]
    for net in nets:
        net.eval()
    out = None
    try:
        for idx in torch.arange(len(data)).split(batch_size):
            feats, present = data.batch(idx, frames, None, specs)
            total = None
            with autocast(device):
                for net in nets:
                    p = torch.softmax(net(feats, present).float(), dim=1)
                    total = p if total is None else total + p
            if out is None:
                out = np.zeros((len(data), total.shape[1]), np.float32)
            out[idx.numpy()] = (total / len(nets)).cpu().numpy()
    finally:
        for net, mode in zip(nets, was_training):
            net.train(mode)
    return out if out is not None else np.zeros((0, 0), np.float32)
