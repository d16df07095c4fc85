"""Typed configs of the fusion model and its training, and the named recipes.

Plain data only: this module imports no model code, so the aggregation and fusion modules
can import their configs from here without a cycle (names are checked in ``net.py``).
A checkpoint stores both configs as plain dicts, so a model directory is self-describing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Named architectures: (face aggregation, fusion). Any "AGG+FUSION" pair works by name too.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "iqiyi": ("netvlad", "mma"),  # iQIYI-VID baseline (§5.2–5.3)
    "famf": ("attentionvlad", "mlma"),  # FAMF (Table 1, last row)
    "famf-mf": ("netvlad", "mlma"),  # FAMF Table 1 ablations
    "famf-fa": ("attentionvlad", "mma"),
    "ghostvlad": ("ghostvlad", "concat"),
    "nextvlad": ("nextvlad", "concat"),
    "avg": ("avg", "concat"),  # iQIYI Table 3 "basic": average pooling, no MMA
}
PROTOTYPE = "prototype"  # no network: each identity is the mean of its clips (see prototype.py)


@dataclass
class AggregationConfig:
    clusters: int = 8  # K; FAMF §4.4: K=8 is best
    ghost_clusters: int = 1  # GhostVLAD G
    nextvlad_expansion: int = 2  # NeXtVLAD λ
    nextvlad_groups: int = 8  # NeXtVLAD G
    l2_normalize: bool = False  # iQIYI §5.2: better without the L2 norm


@dataclass
class FusionConfig:
    mma_dim: int = 64  # iQIYI D̃
    mma_gamma: float = 0.05  # iQIYI γ
    mlma_dims: tuple[int, int] = (128, 32)  # FAMF: two stacked projections
    mlma_softmax_over: str = "output"  # eq. 5 as printed normalises over the output index


@dataclass
class ModalitySpec:
    """One input modality: its feature width, whether it is per frame or per clip, and the
    scale that brings its typical feature norm to 1 (measured on the training clips)."""

    name: str
    dim: int
    per_frame: bool = True
    scale: float = 1.0


@dataclass
class ModelConfig:
    arch: str = "famf"
    aggregation: str = "attentionvlad"  # for the face modality
    fusion: str = "mlma"
    other_aggregation: str = "avg"  # head/body: both papers aggregate only faces with VLAD
    modalities: list[ModalitySpec] = field(default_factory=list)
    fusion_dim: int = 256  # every modality token is mapped to this width (iQIYI D: 512)
    hidden: int = 1024  # classifier width (FAMF: 4096)
    dropout: float = 0.5  # after each hidden layer (FAMF: none)
    bn_momentum: float = 0.1
    classes: list[str] = field(default_factory=list)  # classes[0] is the noise class "0"
    agg: AggregationConfig = field(default_factory=AggregationConfig)
    fus: FusionConfig = field(default_factory=FusionConfig)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["modalities"] = [ModalitySpec(**m) for m in d.get("modalities", [])]
        d["agg"] = AggregationConfig(**d.get("agg", {}))
        fus = dict(d.get("fus", {}))
        if "mlma_dims" in fus:
            fus["mlma_dims"] = tuple(fus["mlma_dims"])
        d["fus"] = FusionConfig(**fus)
        return cls(**d)


@dataclass
class TrainConfig:
    recipe: str = "default"
    epochs: int = 60  # at most; early stopping usually ends sooner
    schedule: str = "cosine"  # "cosine" (to 0 over ``epochs``) or "step" (FAMF)
    decay_start: int = 50  # step: rates ÷10 after this many epochs …
    decay_every: int = 10  # … and again every this many
    lr: float = 1e-3  # every parameter but the face aggregator's
    lr_aggregation: float | None = None  # the face aggregator's; None = ``lr``
    weight_decay: float = 0.05  # AdamW, decoupled
    label_smoothing: float = 0.1
    modality_dropout: float = 0.3  # chance that a present modality is hidden from a training clip
    normalize: bool = True  # scale each modality to a typical norm of 1 (measured on the training clips)
    batch_size: int = 0  # 0 = about 16 optimiser steps per epoch, between 32 and 512
    frames: int = 24  # FAMF N at training time, drawn from all of a clip's frames …
    max_frames: int | None = None  # … or from its ``max_frames`` best only
    test_frames: int = 32  # N at prediction time: the best frames (iQIYI keeps the top 32 faces)
    val_fraction: float = 0.15  # stratified hold-out: early stopping and the printed comparison
    patience: int = 25  # epochs without a better val mAP before stopping; 0 = never stop early
    seed: int = 0
    drop_noise: bool = False  # FAMF removed the noise clips from training; iQIYI keeps class 0
    ensemble: int = 1  # iQIYI §6.4: models on different partitions, probabilities summed
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the initial rates during ``epoch`` (0-based)."""
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        if epoch < self.decay_start:
            return 1.0
        return 0.1 ** (1 + (epoch - self.decay_start) // max(1, self.decay_every))

    def batch_for(self, clips: int) -> int:
        """The batch size for ``clips`` training clips."""
        if self.batch_size:
            return self.batch_size
        return int(min(512, max(32, 2 ** round(math.log2(max(clips / 16, 1))))))


# Recipes: named defaults for (model, training). Explicit options override them.
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Ours: generalises from a few hundred clips (issue 8; ablation in benchmarks/README.md).
    "default": ({}, {}),  # the dataclasses' defaults
    # FAMF §4.3: Adam, lr 0.004 and 0.04 for AttentionVLAD, ÷10 every 10 epochs after 50,
    # batch 4096, hidden 4096, no dropout; nothing held out, the last epoch is kept.
    "paper": (
        dict(hidden=4096, fusion_dim=512, dropout=0.0),
        dict(epochs=70, schedule="step", decay_start=50, decay_every=10, lr=0.004, weight_decay=0.0,
             label_smoothing=0.0, modality_dropout=0.0, normalize=False, batch_size=4096, patience=0),
    ),
}
PAPER_ATTENTIONVLAD_LR = 0.04  # FAMF §4.3: the rate of AttentionVLAD only


def recipe_configs(recipe: str, aggregation: str, model: dict[str, Any] | None = None,
                   train: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments of (ModelConfig, TrainConfig) for ``recipe``; explicit ``model`` and
    ``train`` values (None = not given) override the recipe's."""
    try:
        model_defaults, train_defaults = RECIPES[recipe]
    except KeyError:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}") from None
    train_kw = {"recipe": recipe, **train_defaults}
    if recipe == "paper" and aggregation == "attentionvlad":
        train_kw["lr_aggregation"] = PAPER_ATTENTIONVLAD_LR
    model_kw = dict(model_defaults)
    model_kw.update({k: v for k, v in (model or {}).items() if v is not None})
    train_kw.update({k: v for k, v in (train or {}).items() if v is not None})
    return model_kw, train_kw
