"""Training: FAMF's recipe (Adam, cross-entropy, lr 0.04 for aggregation / 0.004 for the
rest, ÷10 every 10 epochs after 50, batch 4096), checkpoints with their config, exact resume,
and the iQIYI ensemble of models trained on different partitions (§6.4).

A model directory holds ``model.json`` (configs, classes, members) and one folder per member
with ``model.pt`` (final weights) and ``checkpoint.pt`` (everything needed to resume).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidpipe.models.config import ModelConfig, TrainConfig
from vidpipe.models.data import NOISE, ClipSet, DataError
from vidpipe.models.net import FusionNet

FORMAT = "vidpipe-fusion/1"


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise DataError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA (no loss scaling needed); plain float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_classes(labels: list[str]) -> list[str]:
    """["0", identities…]: noise first, identities in numeric order when they are numbers."""
    ids = {label for label in labels if label != NOISE}
    key = (lambda s: (0, int(s), s)) if all(s.isdigit() for s in ids) else (lambda s: (0, 0, s))
    return [NOISE, *sorted(ids, key=key)]


def partitions(n: int, members: int, seed: int) -> list[np.ndarray]:
    """Training indices of each ensemble member: all clips but one fold (all clips if 1)."""
    if members <= 1:
        return [np.arange(n)]
    folds = np.array_split(np.random.default_rng(seed).permutation(n), members)
    return [np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i])) for i in range(members)]


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    clips_per_s: float
    data_share: float  # fraction of the epoch's wall time spent building batches
    lr_factor: float


@dataclass
class TrainResult:
    model_dir: Path
    members: list[Path]
    history: list[list[EpochStats]] = field(default_factory=list)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Trains one member on pre-tensorised data; one call to :meth:`epochs` per epoch."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, seed: int) -> None:
        self.model_cfg, self.cfg, self.device = model_cfg, train_cfg, device
        torch.manual_seed(seed)
        self.model = FusionNet(model_cfg).to(device)
        agg, rest = self.model.parameter_groups()
        groups = [{"params": rest, "lr": train_cfg.lr_rest, "base_lr": train_cfg.lr_rest}]
        if agg:
            groups.append({"params": agg, "lr": train_cfg.lr_aggregation, "base_lr": train_cfg.lr_aggregation})
        self.optimizer = torch.optim.Adam(groups)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.batch_size = train_cfg.batch_size
        self.history: list[EpochStats] = []

    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_config": self.model_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "batch_size": self.batch_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_rng": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [vars(h) for h in self.history],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("model_config") != self.model_cfg.to_dict():
            raise DataError("the checkpoint was trained with a different model config; use a new --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]
        self.batch_size = state["batch_size"]
        self.history = [EpochStats(**h) for h in state["history"]]

    def _batches(self, n: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(n, generator=self.generator)
        i = 0
        while i < n:
            idx = perm[i : i + self.batch_size]
            i += len(idx)
            if len(idx) >= 2:  # BatchNorm needs two samples
                yield idx

    def step(self, data: ClipSet, targets: torch.Tensor, idx: torch.Tensor) -> tuple[float, int, float]:
        t0 = time.perf_counter()
        feats, present = data.batch(idx, self.cfg.frames, self.generator, self.model_cfg.modalities)
        y = targets[idx.to(targets.device)]
        t1 = time.perf_counter()
        with autocast(self.device):
            logits = self.model(feats, present)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = int((logits.argmax(1) == y).sum())
        return float(loss.detach()) * len(idx), correct, t1 - t0

    def run_epoch(self, data: ClipSet, targets: torch.Tensor, progress: bool = False) -> EpochStats:
        from tqdm.auto import tqdm

        factor = self.cfg.lr_factor(self.epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.model.train()
        total_loss, correct, seen, data_s = 0.0, 0, 0, 0.0
        start = time.perf_counter()
        n = len(data)
        bar = tqdm(total=n, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False, disable=not progress)
        for idx in self._batches(n):
            try:
                loss, ok, ds = self.step(data, targets, idx)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size <= 16:
                    raise
                torch.cuda.empty_cache()
                self.batch_size //= 2  # FAMF's 4096 "smaller when memory asks"
                for part in idx.split(self.batch_size):
                    if len(part) >= 2:
                        loss, ok, ds = self.step(data, targets, part)
                        total_loss, correct, seen, data_s = total_loss + loss, correct + ok, seen + len(part), data_s + ds
                bar.update(len(idx))
                continue
            total_loss, correct, seen, data_s = total_loss + loss, correct + ok, seen + len(idx), data_s + ds
            bar.update(len(idx))
            bar.set_postfix(loss=f"{total_loss / max(seen, 1):.3f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        self.epoch += 1
        stats = EpochStats(
            epoch=self.epoch,
            loss=total_loss / max(seen, 1),
            accuracy=correct / max(seen, 1),
            clips_per_s=seen / max(wall, 1e-9),
            data_share=data_s / max(wall, 1e-9),
            lr_factor=factor,
        )
        self.history.append(stats)
        return stats


def targets_of(data: ClipSet, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    if data.labels is None:
        raise DataError("the training clips have no labels")
    return np.array([index[label] for label in data.labels], dtype=np.int64)


def train(
    data: ClipSet,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``train_cfg.ensemble`` members on ``data`` (labelled clips) into ``out_dir``."""
    out_dir = Path(out_dir)
    log = log or (lambda s: None)
    if data.labels is None:
        raise DataError("the training clips have no labels")
    keep = [i for i, label in enumerate(data.labels) if label is not None and not (train_cfg.drop_noise and label == NOISE)]
    data = data.subset(keep)
    if len(data) < 2:
        raise DataError(f"only {len(data)} labelled clip(s) to train on")
    model_cfg.classes = build_classes(list(data.labels))
    model_cfg.modalities = data.specs
    if model_cfg.num_classes < 2:
        raise DataError("the labels name no identity besides noise (0)")
    device = select_device(train_cfg.device)
    if device.type == "cpu" and torch.get_num_threads() < (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "model.json"
    if manifest.exists() and not resume:
        raise DataError(f"{out_dir} already holds a model; pass --resume to continue it or choose a new --out")
    members = [f"member_{i}" for i in range(max(1, train_cfg.ensemble))]
    manifest.write_text(json.dumps({
        "format": FORMAT, "members": members, "complete": False,
        "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
    }, indent=1))
    all_targets = torch.from_numpy(targets_of(data, model_cfg.classes))
    device_data = data.to(device)
    result = TrainResult(out_dir, [out_dir / m for m in members])
    for i, (member, part) in enumerate(zip(members, partitions(len(data), len(members), train_cfg.seed))):
        mdir = out_dir / member
        mdir.mkdir(exist_ok=True)
        trainer = Trainer(model_cfg, train_cfg, device, seed=train_cfg.seed + 1000 * i)
        ckpt = mdir / "checkpoint.pt"
        if resume and ckpt.exists():
            trainer.load_state(torch.load(ckpt, map_location="cpu", weights_only=True))  # RNG states stay on the CPU
            log(f"{member}: resumed after epoch {trainer.epoch}")
        member_data = device_data.subset(part) if len(part) < len(data) else device_data
        targets = all_targets[torch.from_numpy(part)].to(device)
        while trainer.epoch < train_cfg.epochs:
            s = trainer.run_epoch(member_data, targets, progress=progress)
            log(f"{member} epoch {s.epoch}/{train_cfg.epochs}: loss {s.loss:.4f} acc {s.accuracy:.3f} "
                f"{s.clips_per_s:.0f} clips/s (data {100 * s.data_share:.1f}%)")
            _atomic_save(trainer.state(), ckpt)
        _atomic_save({"format": FORMAT, "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                      "model": trainer.model.state_dict()}, mdir / "model.pt")
        result.history.append(trainer.history)
    m = json.loads(manifest.read_text())
    m["complete"] = True
    manifest.write_text(json.dumps(m, indent=1))
    return result
