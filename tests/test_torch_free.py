"""On the CPU a run never imports torch (0.8 s of every start-up): the torch networks are
exported once into the user cache and run in ONNX Runtime; without a cache to write they
stay in torch and give the same numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vidpipe.backends._torch import exported_onnx
from vidpipe.config import Config
from vidpipe.pipeline.runner import Pipeline


def test_an_export_is_made_once_and_again_when_the_code_changes(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("VIDPIPE_CACHE_DIR", str(tmp_path / "cache"))
    weights, code = tmp_path / "net.pt", tmp_path / "net.py"
    weights.write_bytes(b"weights")
    code.write_text("v1")
    exports = []

    def export():
        exports.append(1)
        return torch.nn.Linear(3, 2), (torch.zeros(1, 3),)

    first = exported_onnx(weights, "linear", export, (code,), input_names=["x"])
    assert first.is_file() and exported_onnx(weights, "linear", export, (code,), input_names=["x"]) == first
    assert len(exports) == 1 and first.parent == tmp_path / "cache" / "onnx"
    code.write_text("v2")
    second = exported_onnx(weights, "linear", export, (code,), input_names=["x"])
    assert second != first and second.is_file() and len(exports) == 2
    assert not first.exists()  # replaced, not kept beside it
    (tmp_path / "cache" / "onnx" / "other-0123456789abcdef-linear.onnx").write_bytes(b"another network's")
    weights.write_bytes(b"other weights")
    assert exported_onnx(weights, "linear", export, (code,), input_names=["x"]) not in (first, second)
    assert second.exists()  # other weights: both kept
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "onnx").iterdir()) == ["net", "net", "other"]


def test_without_a_cache_to_write_the_speaker_encoder_stays_in_torch(monkeypatch, tmp_path):
    """The same embedding from the torch encoder as from the exported one."""
    from vidpipe.backends import ge2e

    speech = (np.sin(np.arange(40000) * 0.05) * 3000 * np.sin(np.arange(40000) * 0.0007)).astype(np.int16)
    exported = ge2e.Ge2eEmbedder("cpu").embed([speech])
    def read_only(*args, **kwargs):
        raise PermissionError("read-only cache")

    monkeypatch.setattr(ge2e, "exported_onnx", read_only)
    in_torch = ge2e.Ge2eEmbedder("cpu")
    assert "torch_call" in in_torch.encoder.__qualname__  # the torch network behind the same call
    assert np.abs(in_torch.embed([speech]) - exported).max() < 1e-5


def test_a_cpu_run_never_imports_torch(shared):
    cfg = Config()
    cfg.set("run.weights_dir", str(shared / "weights"))
    cfg.set("run.device", "cpu")
    Pipeline.build(cfg)  # exports whatever the cache lacks (this process may import torch)
    code = ("import sys; from vidpipe.config import Config; from vidpipe.pipeline.runner import Pipeline; "
            f"cfg = Config(); cfg.set('run.weights_dir', {str(shared / 'weights')!r}); cfg.set('run.device', 'cpu'); "
            "p = Pipeline.build(cfg); print(sorted(s.name for s in p.stages)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    stages, torch_imported = out.stdout.split("\n")[:2]
    assert "asd" in stages and "audio" in stages and "speech" in stages
    assert torch_imported == "False"


def test_a_session_call_feeds_the_arrays_to_the_inputs_named_in_order():
    """An exported part's call (`session_call`): arrays in, in the order of the names given,
    its first output out. A two-input graph that is not symmetric (a - b) tells the order."""
    from onnx import TensorProto, helper

    from vidpipe.backends._onnx import session_call

    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in ("a", "b", "out")]
    graph = helper.make_graph([helper.make_node("Sub", ["a", "b"], ["out"])], "sub", x[:2], x[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    a, b = np.array([[5, 7, 9]], np.float32), np.array([[1, 2, 3]], np.float32)
    assert np.array_equal(session_call(model.SerializeToString(), ["a", "b"], "cpu", 1)(a, b), a - b)
    assert np.array_equal(session_call(model.SerializeToString(), ["b", "a"], "cpu", 1)(a, b), b - a)
