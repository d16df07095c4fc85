"""Training that generalises from a few hundred clips, with the papers' recipe one flag away.

The default recipe (``config.RECIPES``) holds out a stratified validation split and keeps
the epoch with the best val mAP@100 (early stopping), hides whole modalities from training
clips at random (modality dropout) so that no modality can carry a clip alone, and uses
AdamW with weight decay, dropout, label smoothing, a cosine schedule and a batch size that
gives about 16 optimiser steps per epoch. The built-in prototype baseline is scored on the
same held-out clips, so a user sees at once whether training paid off. ``--recipe paper``
is FAMF §4.3 as printed.

A model directory holds ``model.json`` (configs, classes, members, validation scores) and one
folder per member with ``model.pt`` (kept weights) and ``checkpoint.pt`` (everything needed
to resume exactly). The iQIYI ensemble trains members on different partitions (§6.4).
"""

from __future__ import annotations

import copy
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

from vidpipe.eval.metrics import scores_map
from vidpipe.models.config import ModalitySpec, ModelConfig, TrainConfig
from vidpipe.models.data import NOISE, ClipSet, DataError, FrameBank, build_classes, stratified_split
from vidpipe.models.net import FusionNet
from vidpipe.models.prototype import PrototypeModel
from vidpipe.models.runtime import autocast, probabilities, select_device

FORMAT = "vidpipe-fusion/2"


def partitions(n: int, members: int, seed: int) -> list[np.ndarray]:
    """Training indices of each ensemble member: all clips but one fold (all clips if 1)."""
    if members <= 1:
        return [np.arange(n)]
    folds = np.array_split(np.random.default_rng(seed).permutation(n), members)
    return [np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i])) for i in range(members)]


def modality_scale(bank: FrameBank, sample: int = 8192, seed: int = 0) -> float:
    """1 / the median frame norm: brings a modality's typical norm to 1, keeping each frame's
    norm relative to the others (a face's norm tells its quality)."""
    n = len(bank.frames)
    if n == 0:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, sample), replace=False))
    median = float(bank.frames[torch.from_numpy(rows)].float().norm(dim=1).median())
    return 1.0 / median if median > 0 else 1.0


def hide_modalities(present: dict[str, torch.Tensor], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Modality dropout: each present modality of each clip is hidden with chance ``p``; a clip
    that would lose all of them keeps the ones it had."""
    if p <= 0:
        return present
    names = list(present)
    had = torch.stack([present[m].cpu() for m in names], 1)
    keep = had & (torch.rand(had.shape, generator=generator) >= p)
    keep = torch.where(keep.any(1, keepdim=True), keep, had)
    return {m: keep[:, i].to(present[m].device) for i, m in enumerate(names)}


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    clips_per_s: float
    data_share: float  # fraction of the epoch's wall time spent building batches
    lr_factor: float
    val_map: float | None = None


@dataclass
class TrainResult:
    model_dir: Path
    members: list[Path]
    history: list[list[EpochStats]] = field(default_factory=list)
    val_clips: int = 0
    val_map: float | None = None  # the kept model's (the ensemble's) mAP@100 on the held-out clips
    prototype_val_map: float | None = None  # the face prototype baseline's on the same clips
    best_epochs: list[int] = field(default_factory=list)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Trains one member on pre-tensorised data, one :meth:`run_epoch` per epoch, and keeps
    the weights of its best validation epoch."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, seed: int,
                 batch_size: int | None = None) -> None:
        self.model_cfg, self.cfg, self.device = model_cfg, train_cfg, device
        torch.manual_seed(seed)
        self.model = FusionNet(model_cfg).to(device)
        self.optimizer = torch.optim.AdamW(self.parameter_groups(), weight_decay=train_cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.batch_size = batch_size or train_cfg.batch_size or 256
        self.history: list[EpochStats] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (val mAP, epoch, weights)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The face aggregator at ``lr_aggregation`` (FAMF: 0.04 for AttentionVLAD), the rest
        at ``lr``. Both decay by the same schedule factor (``base_lr`` × factor)."""
        agg, rest = self.model.parameter_groups()
        lr_agg = self.cfg.lr_aggregation if self.cfg.lr_aggregation is not None else self.cfg.lr
        groups = [{"name": "rest", "params": rest, "lr": self.cfg.lr, "base_lr": self.cfg.lr}]
        if agg:
            groups.append({"name": "aggregation", "params": agg, "lr": lr_agg, "base_lr": lr_agg})
        return groups

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
            "best": None if self.best is None else {"map": self.best[0], "epoch": self.best[1], "model": self.best[2]},
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
        best = state.get("best")
        self.best = None if best is None else (best["map"], best["epoch"], best["model"])

    def _batches(self, n: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(n, generator=self.generator)
        for idx in perm.split(self.batch_size):
            if len(idx) >= 2:  # BatchNorm needs two samples
                yield idx

    def step(self, data: ClipSet, targets: torch.Tensor, idx: torch.Tensor) -> tuple[float, int, float]:
        t0 = time.perf_counter()
        feats, present = data.batch(idx, self.cfg.frames, self.generator, self.model_cfg.modalities,
                                    self.cfg.max_frames)
        present = hide_modalities(present, self.cfg.modality_dropout, self.generator)
        y = targets[idx.to(targets.device)]
        t1 = time.perf_counter()
        with autocast(self.device):
            logits = self.model(feats, present)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
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
            parts = [idx]
            while parts:
                part = parts.pop()
                try:
                    loss, ok, ds = self.step(data, targets, part)
                except torch.cuda.OutOfMemoryError:
                    if self.batch_size <= 16:
                        raise
                    torch.cuda.empty_cache()
                    self.batch_size //= 2  # FAMF's 4096 "smaller when memory asks"
                    parts += [p for p in part.split(self.batch_size) if len(p) >= 2]
                    continue
                total_loss, correct, seen, data_s = total_loss + loss, correct + ok, seen + len(part), data_s + ds
            bar.update(len(idx))
            bar.set_postfix(loss=f"{total_loss / max(seen, 1):.3f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        self.epoch += 1
        stats = EpochStats(self.epoch, total_loss / max(seen, 1), correct / max(seen, 1), seen / max(wall, 1e-9),
                           data_s / max(wall, 1e-9), factor)
        self.history.append(stats)
        return stats

    def validate(self, val: ClipSet) -> float:
        """Val mAP@100 of the current weights; remembers them when they are the best so far (a
        tie goes to the later, better-trained epoch: a small val split saturates early)."""
        score = scores_map(probabilities([self.model], self.model_cfg.modalities, val, self.device,
                                         self.cfg.test_frames), val.clip_ids, self.model_cfg.classes, val.labels)
        self.history[-1].val_map = score
        if self.best is None or score >= self.best[0]:
            self.best = (score, self.epoch, copy.deepcopy(self.model.state_dict()))
        return score

    @property
    def done(self) -> bool:
        """All epochs run, or ``patience`` epochs without a better val mAP."""
        if self.epoch >= self.cfg.epochs:
            return True
        return bool(self.cfg.patience and self.best is not None and self.epoch - self.best[1] >= self.cfg.patience)

    def kept_weights(self) -> dict[str, torch.Tensor]:
        """The best validation epoch's weights under early stopping, else the last epoch's."""
        if self.cfg.patience and self.best is not None:
            return self.best[2]
        return self.model.state_dict()


def targets_of(data: ClipSet, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    if data.labels is None:
        raise DataError("the training clips have no labels")
    return np.array([index[label] for label in data.labels], dtype=np.int64)


def _prepare(data: ClipSet, model_cfg: ModelConfig, train_cfg: TrainConfig) -> tuple[ClipSet, ClipSet | None]:
    """Labelled clips split into (train, held-out); fills the model's classes and modalities."""
    if data.labels is None:
        raise DataError("the training clips have no labels")
    keep = [i for i, label in enumerate(data.labels)
            if label is not None and not (train_cfg.drop_noise and label == NOISE)]
    data = data.subset(keep)
    if len(data) < 2:
        raise DataError(f"only {len(data)} labelled clip(s) to train on")
    model_cfg.classes = build_classes(data.labels)
    if model_cfg.num_classes < 2:
        raise DataError("the labels name no identity besides noise (0)")
    train_idx, val_idx = stratified_split(data.labels, train_cfg.val_fraction, train_cfg.seed)
    train_part = data.subset(train_idx)
    model_cfg.modalities = [
        ModalitySpec(s.name, s.dim, s.per_frame, modality_scale(train_part.banks[s.name]) if train_cfg.normalize else 1.0)
        for s in train_part.specs
    ]
    return train_part, (data.subset(val_idx) if len(val_idx) else None)


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
    train_part, val = _prepare(data, model_cfg, train_cfg)
    device = select_device(train_cfg.device)
    if device.type == "cpu" and torch.get_num_threads() < (os.cpu_count() or 1):
        torch.set_num_threads(os.cpu_count() or 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "model.json"
    if manifest.exists() and not resume:
        raise DataError(f"{out_dir} already holds a model; pass --resume to continue it or choose a new --out")
    members = [f"member_{i}" for i in range(max(1, train_cfg.ensemble))]
    meta: dict[str, Any] = {"format": FORMAT, "members": members, "complete": False,
                            "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict()}
    manifest.write_text(json.dumps(meta, indent=1))
    all_targets = torch.from_numpy(targets_of(train_part, model_cfg.classes))
    device_data = train_part.to(device)
    device_val = val.to(device) if val is not None else None
    result = TrainResult(out_dir, [out_dir / m for m in members], val_clips=0 if val is None else len(val))
    batch = train_cfg.batch_for(len(train_part))
    nets = []
    for i, (member, part) in enumerate(zip(members, partitions(len(train_part), len(members), train_cfg.seed))):
        mdir = out_dir / member
        mdir.mkdir(exist_ok=True)
        trainer = Trainer(model_cfg, train_cfg, device, seed=train_cfg.seed + 1000 * i, batch_size=batch)
        ckpt = mdir / "checkpoint.pt"
        if resume and ckpt.exists():
            trainer.load_state(torch.load(ckpt, map_location="cpu", weights_only=True))  # RNG states stay on the CPU
            log(f"{member}: resumed after epoch {trainer.epoch}")
        member_data = device_data.subset(part) if len(part) < len(train_part) else device_data
        targets = all_targets[torch.from_numpy(part)].to(device)
        while not trainer.done:
            s = trainer.run_epoch(member_data, targets, progress=progress)
            last = trainer.epoch >= train_cfg.epochs
            if device_val is not None and (train_cfg.patience or last):
                trainer.validate(device_val)
            val_txt = f" val mAP {s.val_map:.4f}" if s.val_map is not None else ""
            log(f"{member} epoch {s.epoch}/{train_cfg.epochs}: loss {s.loss:.4f} acc {s.accuracy:.3f}{val_txt} "
                f"{s.clips_per_s:.0f} clips/s (data {100 * s.data_share:.1f}%)")
            _atomic_save(trainer.state(), ckpt)
        trainer.model.load_state_dict(trainer.kept_weights())
        result.best_epochs.append(trainer.best[1] if train_cfg.patience and trainer.best else trainer.epoch)
        _atomic_save({"format": FORMAT, "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                      "model": trainer.model.state_dict()}, mdir / "model.pt")
        result.history.append(trainer.history)
        nets.append(trainer.model)
    if val is not None:
        probs = probabilities(nets, model_cfg.modalities, device_val, device, train_cfg.test_frames)
        result.val_map = scores_map(probs, val.clip_ids, model_cfg.classes, val.labels)
        result.prototype_val_map = prototype_val_map(train_part, val)
    meta.update(complete=True, validation={"clips": result.val_clips, "map": result.val_map,
                                           "prototype_map": result.prototype_val_map,
                                           "kept_epochs": result.best_epochs})
    manifest.write_text(json.dumps(meta, indent=1))
    return result


def prototype_val_map(train_part: ClipSet, val: ClipSet) -> float | None:
    """The face prototype baseline, fitted on ``train_part``, scored on ``val``."""
    if "face" not in train_part.banks:
        return None
    proto = PrototypeModel.fit(train_part, ["face"])
    return scores_map(proto.scores(val.select_modalities(["face"])), val.clip_ids, proto.classes, val.labels)
