"""The GPU path, run on the CPU: device choice, batch sizes per device (not in the config
hash), and the decode running ahead of the models through a bounded queue."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

import vidpipe
from synth import make_video
from vidpipe import devices
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline.ahead import run_ahead


@pytest.fixture
def cuda(monkeypatch):
    """As on a machine with a GPU (the code path only: nothing runs on it)."""
    monkeypatch.setattr(devices, "cuda_available", lambda: True)


def test_auto_means_cuda_when_there_is_one(cuda):
    assert devices.resolve("auto") == "cuda" and devices.resolve("cpu") == "cpu"
    assert devices.resolve("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        devices.resolve("tpu")


def test_torch_falls_back_to_the_cpu_when_it_sees_no_gpu(cuda):
    import torch

    from vidpipe.backends._torch import torch_device

    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_device("auto").type == want and torch_device("cuda").type == want


def test_no_gpu_driver_answers_without_importing_torch():
    """Without a GPU driver's device files (and an ONNX Runtime without CUDA) the answer is
    the CPU, found without importing torch: 1 s of every run whose stages are all ONNX."""
    import os
    import subprocess
    import sys

    import onnxruntime as ort

    if any(os.path.exists(p) for p in devices.GPU_DEVICE_FILES) or "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a GPU driver is here")
    code = "import sys; from vidpipe import devices; print(devices.cuda_available(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_batches_are_bigger_on_a_gpu_and_do_not_change_the_config_hash(cuda):
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"
    cfg.run.device = "cpu"
    assert devices.with_device_batches(cfg) is cfg  # the CPU: as configured
    cfg.run.device = "auto"
    gpu = devices.with_device_batches(cfg)
    assert gpu.faces.batch_size == cfg.faces.batch_size * devices.GPU_BATCH_FACTOR
    assert cfg.faces.batch_size == 32  # the caller's config is left alone
    cfg.faces.batch_size = 5  # set by the user: kept
    assert devices.with_device_batches(cfg).faces.batch_size == 5
    assert gpu.analysis_dict() == cfg.analysis_dict()  # what the config hash is made of


def test_run_ahead_keeps_order_and_stays_within_its_bound():
    produced: list[int] = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for item in run_ahead(items(), size=3):
        time.sleep(0.005)  # a slow consumer: the producer waits at the bound
        assert len(produced) - len(seen) <= 3 + 2  # the queue, one being put, one being consumed
        seen.append(item)
    assert seen == list(range(20))


def test_run_ahead_raises_the_producers_error_and_stops_it_when_the_consumer_stops():
    def failing():
        yield 1
        raise ValueError("corrupt packet")

    with pytest.raises(ValueError, match="corrupt packet"):
        list(run_ahead(failing(), size=2))
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    for item in run_ahead(endless(), size=2):
        if item == 5:
            break
    assert closed.wait(2)  # the generator (its open file) is closed, on the producer thread


def test_decoding_ahead_gives_the_same_store(tmp_path):
    video = make_video(tmp_path / "v.mp4", [1.5, 0.6, 2.0], audio=True)
    stores = []
    for ahead in (0, 2):
        cfg = Config()
        cfg.faces.detector = cfg.faces.embedder = "dlib"
        cfg.run.decode_ahead = ahead
        assert vidpipe.run(video, tmp_path / f"ahead{ahead}", cfg).count("ok") == 1
        stores.append({t: vidpipe.read_table(tmp_path / f"ahead{ahead}", t) for t in ("clips", "faces")})
    for table in ("clips", "faces"):
        pd.testing.assert_frame_equal(stores[0][table], stores[1][table])
