"""ONNX Runtime sessions for every ONNX backend: which providers, how many threads.

CUDA is used when asked for, or on "auto" when this onnxruntime has the CUDA provider; the
CPU provider stays as the fallback. `threads` splits the cores between worker processes.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from vidpipe.config import ConfigError
from vidpipe.registry import log_once

DEVICES = ("auto", "cpu", "cuda")


def onnx_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for `device` ("auto" | "cpu" | "cuda" | "cuda:N")."""
    import onnxruntime as ort

    device = (device or "auto").lower()
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if not cuda_ok:
            log_once(logging.WARNING, "device %s asked for, but this onnxruntime has no CUDA provider "
                     "(install onnxruntime-gpu); ONNX models will run on CPU", device)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_ok else ["CPUExecutionProvider"]
    raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")


def session_options(threads: int = 0):
    """Quiet sessions (ERROR level: dynamic-shape graphs warn on every call) with
    `threads` intra-op threads (0: onnxruntime's default, all cores) that sleep between
    calls: spinning, onnxruntime's default, burns the cores the decode thread needs (on 2
    cores, 2 CPU-seconds of the shared set's 17)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def session(model, device: str = "auto", threads: int = 0):
    """An InferenceSession for `model` (a file path, or the bytes of a model edited in memory) on `device`."""
    import onnxruntime as ort

    model = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=onnx_providers(device))


def session_call(model, input_names, device: str = "auto", threads: int = 0):
    """A session for `model` behind a plain call: arrays in, in `input_names`' order; its
    first output out (an exported torch network's part, `_torch.exported_or_torch`)."""
    sess = session(model, device, threads)
    names = list(input_names)
    return lambda *arrays: sess.run(None, dict(zip(names, arrays)))[0]


def free_batch(path, fix) -> bytes | None:
    """The ONNX model at `path` with a free batch dimension: `fix(node, constants)` edits the
    nodes that tie the outputs to a batch of one (a Transpose or Reshape written for batch 1)
    and returns whether it changed one. None when nothing needed fixing is found (another
    export of the model): callers then run it one image per call, as before."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    if not sum(bool(fix(node, constants, numpy_helper)) for node in graph.node):
        return None
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"  # dynamic: the first axis now grows with the batch
    del graph.value_info[:]  # shapes inferred for batch 1
    return model.SerializeToString()


class InputBuffer:
    """A float32 network input reused from call to call (one per thread).

    A detector's batch input is 10-25 MB. Made afresh for every call, it is handed back to
    the kernel when freed and page-faulted in again by the next call, which costs about as
    much as filling it (SCRFD, 8 frames of 640x288: cv2's batched blob 19 ms beside the
    network, 9 ms written here instead). ONNX Runtime reads its inputs during `run` only, so
    the next call may overwrite them. A batch above `keep_mb` gets an array of its own
    (photo folders of one size)."""

    def __init__(self, keep_mb: float = 64) -> None:
        self._local = threading.local()
        self._keep = int(keep_mb * 2**20) // 4

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised float32 array of `shape`, valid until this thread's next call."""
        need = math.prod(shape)
        if need > self._keep:
            return np.empty(shape, np.float32)
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < need:
            buf = self._local.buf = np.empty(need, np.float32)
        return buf[:need].reshape(shape)
