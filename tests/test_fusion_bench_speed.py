"""The fraction-of-peak benchmark holds the model to the peak of the dtype it runs in."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from vidpipe.models.runtime import autocast, compute_dtype


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fusion_speed.py"
    spec = importlib.util.spec_from_file_location("bench_fusion_speed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_models_run_bf16_on_cuda_and_float32_on_cpu():
    assert compute_dtype(torch.device("cuda")) == torch.bfloat16
    assert compute_dtype(torch.device("cpu")) == torch.float32
    with autocast(torch.device("cpu")):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_peak_is_measured_in_the_dtype_the_model_runs_in(bench, monkeypatch):
    seen = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: seen.append(a.dtype) or real_mm(a, b))
    assert bench.peak_gflops(torch.device("cpu"), torch.bfloat16, seconds=0.01, sizes=(64,)) > 0
    assert set(seen) == {torch.bfloat16}

    # speed_part asks for the peak of compute_dtype(device): bf16 on CUDA, whatever runs here
    asked = []

    class Stop(Exception):
        pass

    def spy(device, dtype, **kwargs):
        asked.append(dtype)
        raise Stop

    monkeypatch.setattr(bench, "peak_gflops", spy)
    monkeypatch.setattr(bench, "compute_dtype", lambda device: torch.bfloat16)  # as on CUDA
    with pytest.raises(Stop):
        bench.speed_part(type("Args", (), {"device": "cpu", "speed_batch": 8, "speed_reps": 1})())
    assert asked == [torch.bfloat16]
