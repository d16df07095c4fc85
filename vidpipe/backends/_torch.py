"""Torch device for every torch backend: CUDA when asked for, or on "auto" when torch sees
a GPU; the CPU otherwise (with a warning when CUDA was asked for but is not there). And
torch networks exported once to ONNX for the CPU, where ONNX Runtime runs them without
importing torch (0.8 s of every start-up)."""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vidpipe.config import ConfigError
from vidpipe.registry import log_once
from vidpipe.util import atomic_path
from vidpipe.weights import cache_dir, sha256_file


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


def runs_on_cpu(device: str = "auto") -> bool:
    """Whether torch networks would run on the CPU for `device`: told without importing
    torch on a machine with no GPU driver."""
    from vidpipe.devices import resolve

    return resolve(device) == "cpu" or torch_device(device).type == "cpu"


def torch_call(module, device: str) -> Callable[..., np.ndarray]:
    """`module` in torch on `device`, called as an exported part is (`_onnx.session_call`):
    NumPy arrays in, one array out."""
    import torch

    dev = torch_device(device)
    module = module.eval().to(dev)

    def torch_on_arrays(*arrays: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(x).to(dev) for x in arrays)).cpu().numpy()
    return torch_on_arrays


def exported_or_torch(owner: str, what: str, device: str, onnx: Callable[[], Callable],
                      module: Callable[[], object]) -> Callable[..., np.ndarray]:
    """A torch network's call: on the CPU `onnx()`, its export in ONNX Runtime; on CUDA, or
    where no export can be made or cached, `module()` in torch (`torch_call`): the same
    numbers, slower on the CPU, with a warning."""
    if runs_on_cpu(device):
        try:
            return onnx()
        except Exception as e:  # no exporter, or no cache to write
            log_once(logging.WARNING, "%s: the %s stays in torch (%s)", owner, what, e)
    return torch_call(module(), device)


def exported_onnx(weights: Path, part: str, export: Callable[[], tuple], code: Sequence[Path] = (), **options) -> Path:
    """`part` of the network in `weights` as an ONNX file in the user cache. The first call
    exports it: `export()` gives (module, example inputs), and torch is imported then only.
    The file's name holds the weights' hash and that of the source files in `code` (the
    network and its export), so that editing either exports again (and removes the export
    it replaces). `options` are torch.onnx.export's (input_names, output_names, dynamic_axes)."""
    weights = Path(weights)
    source = hashlib.sha256(b"".join(Path(f).read_bytes() for f in code)).hexdigest()[:8]
    prefix = f"{weights.stem}-{sha256_file(weights)[:16]}"
    onnx_file = cache_dir() / "onnx" / f"{prefix}-{source}-{part}.onnx"
    if not onnx_file.is_file():
        import torch

        module, example = export()
        with atomic_path(onnx_file) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), example, str(tmp), dynamo=False, **options)
        older = re.compile(rf"{re.escape(prefix)}-(?:[0-9a-f]{{8}}-)?{re.escape(part)}\.onnx")
        for old in onnx_file.parent.iterdir():  # the same weights' part exported by other code
            if old != onnx_file and older.fullmatch(old.name):
                old.unlink(missing_ok=True)
    return onnx_file
