#!/usr/bin/env python
"""Speed of the fusion model as a fraction of this machine's peak.

    python benchmarks/bench_fusion_speed.py                    # CPU here, ~1 min
    python benchmarks/bench_fusion_speed.py --speed-batch 4096  # on CUDA

Peak: the best ``torch.mm`` throughput measured in the same run, in the dtype the model's
matmuls run in (float32 on CPU, bfloat16 under autocast on CUDA), probed again before each
timed repetition so that the peak and the model see the same load from other processes.
Model: the FAMF configuration (AttentionVLAD K=8 + MLMA, N=24, D=512, 1,000 identities,
hidden 4096, face+head+body+audio, the paper's recipe), FLOPs counted by torch's
FlopCounterMode. The table is markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve on shared cores

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vidpipe.models.config import AggregationConfig, ModalitySpec, ModelConfig, TrainConfig, recipe_configs  # noqa: E402
from vidpipe.models.data import ClipSet, FrameBank  # noqa: E402
from vidpipe.models.runtime import autocast, compute_dtype, select_device  # noqa: E402
from vidpipe.models.train import Trainer  # noqa: E402


def peak_gflops(device: torch.device, dtype: torch.dtype, seconds: float = 1.5,
                sizes: tuple[int, ...] = (1024, 2048, 4096)) -> float:
    """Best ``torch.mm`` throughput in ``dtype`` over a few square sizes (GFLOP/s): the peak the
    model is held to is that of the dtype it runs in (bf16 under autocast on CUDA)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        reps, t0 = 0, time.perf_counter()
        while True:
            t = time.perf_counter()
            torch.mm(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
            reps += 1
            if time.perf_counter() - t0 > seconds / 3 and reps >= 2:
                break
    return best


def famf_speed_config(identities: int = 1000) -> ModelConfig:
    return ModelConfig(arch="famf", aggregation="attentionvlad", fusion="mlma", hidden=4096, fusion_dim=512, dropout=0.0,
                       modalities=[ModalitySpec("face", 512), ModalitySpec("head", 512), ModalitySpec("body", 512),
                                   ModalitySpec("audio", 512, per_frame=False)],
                       classes=[str(i) for i in range(identities + 1)], agg=AggregationConfig(clusters=8))


def count_flops(model: torch.nn.Module, feats, present, y=None) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        logits = model(feats, present)
        if y is not None:
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(next(iter(feats.values())))


def speed_part(args: argparse.Namespace) -> None:
    device = select_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    dtype = compute_dtype(device)  # the peak is that of the dtype the model's matmuls run in
    peak_before = peak_gflops(device, dtype)
    mcfg = famf_speed_config()
    bs = args.speed_batch
    rng = np.random.default_rng(0)
    n_clips = 2 * bs
    banks = {}
    for spec in mcfg.modalities:  # pre-tensorised random frames: 32 per clip (audio: 1)
        per = 32 if spec.per_frame else 1
        feats = rng.standard_normal((n_clips * per, spec.dim), dtype=np.float32).astype(np.float16)
        banks[spec.name] = FrameBank.from_rows(np.repeat(np.arange(n_clips), per), feats, n_clips, 32)
    data = ClipSet([str(i) for i in range(n_clips)], banks, None).to(device)
    targets = torch.from_numpy(rng.integers(0, mcfg.num_classes, n_clips)).to(device)
    tcfg = TrainConfig(**recipe_configs("paper", "attentionvlad")[1])
    tcfg.batch_size, tcfg.device = bs, device.type
    trainer = Trainer(mcfg, tcfg, device, seed=0)
    model = trainer.model
    small = torch.arange(64)
    f, p = data.batch(small, 24, None, mcfg.modalities)
    model.eval()
    with torch.no_grad():
        infer_flops = count_flops(model, f, p)
    model.train()
    train_flops = count_flops(model, f, p, targets[:64])
    peaks = [peak_before]

    def timed(fn, reps: int) -> tuple[float, float, float]:
        """Best of ``reps`` (wall s, data s, CPU cores obtained); a short peak probe runs
        before each rep, so the peak and the model see the same load from other processes."""
        best, data_s, cores = float("inf"), 0.0, 0.0
        for _ in range(reps):
            peaks.append(peak_gflops(device, dtype, seconds=0.6))
            t, c = time.perf_counter(), time.process_time()
            d = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            el = time.perf_counter() - t
            if el < best:
                best, data_s, cores = el, d, (time.process_time() - c) / el
        return best, data_s, cores

    def train_step() -> float:
        return trainer.step(data, targets, torch.arange(bs))[2]

    def infer_step() -> float:
        model.eval()
        t = time.perf_counter()
        f, p = data.batch(torch.arange(bs), 24, None, mcfg.modalities)
        d = time.perf_counter() - t
        with torch.inference_mode(), autocast(device):
            model(f, p).float().softmax(1)
        return d

    train_step()  # warm-up
    t_train, d_train, c_train = timed(train_step, args.speed_reps)
    infer_step()
    t_infer, d_infer, c_infer = timed(infer_step, args.speed_reps)
    peak = max(peaks)
    amp = f" ({str(dtype).replace('torch.', '')}{' autocast' if device.type == 'cuda' else ''})"
    print(f"\n### Speed: FAMF configuration (AttentionVLAD K=8 + MLMA, N=24, D=512, 1,000 identities, "
          f"hidden 4096, face+head+body+audio) on {device.type}{amp}, batch {bs}, torch threads "
          f"{torch.get_num_threads()}\n")
    print(f"Peak {str(dtype).replace('torch.', '')} torch.mm, measured in this run: {peak:.1f} GFLOP/s. "
          f"Model: {infer_flops / 1e6:.1f} MFLOP per clip forward, {train_flops / 1e6:.1f} MFLOP per clip "
          f"forward+backward (matmul FLOPs, torch FlopCounterMode).\n")
    print("| phase | clips/s | achieved GFLOP/s | fraction of peak | target | data loading share | CPU cores obtained |")
    print("|---|---|---|---|---|---|---|")
    for name, t, d, c, flops, target in (("training", t_train, d_train, c_train, train_flops, 0.35),
                                         ("inference", t_infer, d_infer, c_infer, infer_flops, 0.50)):
        achieved = flops * bs / t / 1e9
        frac = achieved / peak
        cores = f"{c:.2f} of {torch.get_num_threads()}" if device.type == "cpu" else "–"
        print(f"| {name} | {bs / t:.0f} | {achieved:.1f} | {100 * frac:.0f}% | ≥{100 * target:.0f}% "
              f"{'PASS' if frac >= target else 'FAIL'} | {100 * d / t:.1f}% | {cores} |")
    print(f"\nPeak probes ranged {min(peaks):.0f}–{max(peaks):.0f} GFLOP/s (other processes share these cores); "
          "the fraction uses the highest.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--speed-batch", type=int, default=2048)
    p.add_argument("--speed-reps", type=int, default=3)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    speed_part(p.parse_args())


if __name__ == "__main__":
    main()
