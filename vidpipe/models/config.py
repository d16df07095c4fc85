"""Typed configs of the fusion model and its training; the papers' numbers are the defaults.

A checkpoint stores both as plain dicts, so a model directory is self-describing.
"""

from __future__ import annotations

import dataclasses
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


def resolve_arch(name: str) -> tuple[str, str]:
    """``famf`` → (attentionvlad, mlma); ``netvlad+mlma`` → (netvlad, mlma)."""
    from vidpipe.models.aggregation import AGGREGATORS
    from vidpipe.models.fusion import FUSIONS

    key = name.strip().lower()
    if key in ARCHITECTURES:
        return ARCHITECTURES[key]
    if "+" in key:
        agg, fus = (part.strip() for part in key.split("+", 1))
        if agg in AGGREGATORS and fus in FUSIONS:
            return agg, fus
    raise ValueError(
        f"unknown architecture {name!r}: use one of {', '.join(ARCHITECTURES)} or AGG+FUSION with "
        f"AGG in {{{', '.join(AGGREGATORS)}}} and FUSION in {{{', '.join(FUSIONS)}}}"
    )


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
    """One input modality: its feature width and whether it is per frame or per clip."""

    name: str
    dim: int
    per_frame: bool = True


@dataclass
class ModelConfig:
    arch: str = "famf"
    aggregation: str = "attentionvlad"  # for the face modality
    fusion: str = "mlma"
    other_aggregation: str = "avg"  # head/body: both papers aggregate only faces with VLAD
    modalities: list[ModalitySpec] = field(default_factory=list)
    fusion_dim: int = 512  # iQIYI D: every modality token is mapped to this width
    hidden: int = 4096  # FAMF classifier width
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
    epochs: int = 70  # FAMF: 50 epochs at the initial rates, then ÷10 every 10 epochs
    decay_start: int = 50
    decay_every: int = 10
    lr_aggregation: float = 0.04  # FAMF: AttentionVLAD's rate
    lr_rest: float = 0.004  # FAMF: every other parameter
    batch_size: int = 4096  # FAMF; halved automatically on CUDA out-of-memory
    frames: int = 24  # FAMF N at training time
    test_frames: int = 32  # N at prediction time (iQIYI keeps the top 32 faces)
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
        """Multiplier of the initial rates at ``epoch`` (0-based)."""
        if epoch < self.decay_start:
            return 1.0
        return 0.1 ** (1 + (epoch - self.decay_start) // max(1, self.decay_every))
