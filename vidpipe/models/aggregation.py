"""Frame aggregation: a set of N frame features (B, N, D) → T fixed tokens (B, T, E).

VLAD-style modules keep one token per cluster (the residual sum V(:, k)), which is what FAMF's
MLMA attends over (its X has K₁ face rows, §3.3); average pooling gives a single token.
Every module is registered by name in :data:`AGGREGATORS`.

All VLAD variants share :class:`_VladBase`: the iQIYI adaptation (BatchNorm after the
assignment FC, no L2 normalisation by default, iQIYI §5.2) and eq. 1–2 of FAMF.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.models.config import AggregationConfig


class Aggregator(nn.Module):
    """Base class: ``forward(x: (B, N, D)) -> (B, num_tokens, token_dim)``."""

    num_tokens: int
    token_dim: int

    def frame_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) contribution of each frame to the output (FAMF Fig. 3); uniform by default."""
        return torch.full(x.shape[:2], 1.0 / x.shape[1], device=x.device, dtype=x.dtype)


AGGREGATORS: dict[str, type[Aggregator]] = {}


def register_aggregator(name: str) -> Callable[[type[Aggregator]], type[Aggregator]]:
    def deco(cls: type[Aggregator]) -> type[Aggregator]:
        AGGREGATORS[name] = cls
        return cls

    return deco


def build_aggregator(name: str, dim: int, cfg: AggregationConfig | None = None) -> Aggregator:
    try:
        cls = AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregation {name!r}; known: {', '.join(AGGREGATORS)}") from None
    return cls(dim, cfg or AggregationConfig())


@register_aggregator("avg")
class AveragePooling(Aggregator):
    """Mean over frames: the iQIYI "basic" method (Table 3)."""

    def __init__(self, dim: int, cfg: AggregationConfig) -> None:
        super().__init__()
        self.num_tokens, self.token_dim = 1, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


def vlad_residuals(assign: torch.Tensor, x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """V(k, :) = Σ_i α_k(x_i) (x_i − c_k), batched: (B, N, K), (B, N, E), (K, E) → (B, K, E).

    Written as αᵀx − (Σ_i α) c so that it is one batched matmul, not N×K subtractions.
    """
    v = torch.bmm(assign.transpose(1, 2), x)
    return v - assign.sum(dim=1).unsqueeze(-1) * centers.to(v.dtype)


class _VladBase(Aggregator):
    """Soft assignment FC → BatchNorm (iQIYI) → softmax over clusters → residual sums."""

    def __init__(self, dim: int, cfg: AggregationConfig, extra_clusters: int = 0) -> None:
        super().__init__()
        self.clusters = cfg.clusters
        total = cfg.clusters + extra_clusters
        self.assignment = nn.Linear(dim, total)  # a_k, b_k of eq. 2
        self.assignment_bn = nn.BatchNorm1d(total)
        self.centers = nn.Parameter(torch.randn(total, dim) / dim**0.5)  # c_k
        self.l2_normalize = cfg.l2_normalize
        self.num_tokens, self.token_dim = cfg.clusters, dim

    def soft_assign(self, x: torch.Tensor) -> torch.Tensor:
        """α_k(x_i), (B, N, K_total)."""
        b, n, _ = x.shape
        logits = self.assignment_bn(self.assignment(x).reshape(b * n, -1))
        return F.softmax(logits, dim=-1).reshape(b, n, -1)

    def cluster_weights(self) -> torch.Tensor | None:
        """Per-cluster output weights (AttentionVLAD's φ(c_k)); None = all ones."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assign = self.soft_assign(x)
        v = vlad_residuals(assign, x, self.centers)[:, : self.clusters]  # ghosts dropped here
        w = self.cluster_weights()
        if w is not None:
            v = v * w.to(v.dtype).view(1, -1, 1)
        if self.l2_normalize:  # the original NetVLAD: intra-normalisation then global L2
            v = F.normalize(F.normalize(v, dim=-1).flatten(1), dim=-1).view_as(v)
        return v

    def frame_weights(self, x: torch.Tensor) -> torch.Tensor:
        assign = self.soft_assign(x)[..., : self.clusters]
        w = self.cluster_weights()
        return assign.sum(-1) if w is None else assign @ w.to(assign.dtype)


@register_aggregator("netvlad")
class NetVLAD(_VladBase):
    """NetVLAD with the iQIYI adaptation: BN after the assignment FC, no L2 norm."""


@register_aggregator("ghostvlad")
class GhostVLAD(_VladBase):
    """GhostVLAD: G extra "ghost" clusters absorb low-quality frames and are dropped."""

    def __init__(self, dim: int, cfg: AggregationConfig) -> None:
        super().__init__(dim, cfg, extra_clusters=cfg.ghost_clusters)


@register_aggregator("attentionvlad")
class AttentionVLAD(_VladBase):
    """FAMF eq. 3–4: V(j,k) = Σ_i φ(c_k) α_k(x_i)(x_i(j) − c_k(j)).

    φ is one FC layer applied to the cluster centre; we squash it with a sigmoid so that the
    weights lie in (0, 1), which makes GhostVLAD the special case φ ∈ {0, 1} (FAMF §3.2).
    """

    def __init__(self, dim: int, cfg: AggregationConfig) -> None:
        super().__init__(dim, cfg)
        self.attention = nn.Linear(dim, 1)

    def cluster_weights(self) -> torch.Tensor:
        return torch.sigmoid(self.attention(self.centers)).squeeze(-1)


@register_aggregator("nextvlad")
class NeXtVLAD(Aggregator):
    """NeXtVLAD (Lin et al. 2018): expand by λ, split into G groups, each group gets a
    sigmoid attention and a soft assignment over the shared K clusters of width λD/G."""

    def __init__(self, dim: int, cfg: AggregationConfig) -> None:
        super().__init__()
        lam, groups = cfg.nextvlad_expansion, cfg.nextvlad_groups
        if (lam * dim) % groups:
            raise ValueError(f"NeXtVLAD needs λ·D ({lam * dim}) divisible by the groups ({groups})")
        self.groups, self.clusters = groups, cfg.clusters
        self.group_dim = lam * dim // groups
        self.expand = nn.Linear(dim, lam * dim)
        self.group_attention = nn.Linear(lam * dim, groups)
        self.assignment = nn.Linear(lam * dim, groups * cfg.clusters)
        self.assignment_bn = nn.BatchNorm1d(groups * cfg.clusters)
        self.centers = nn.Parameter(torch.randn(cfg.clusters, self.group_dim) / self.group_dim**0.5)
        self.l2_normalize = cfg.l2_normalize
        self.num_tokens, self.token_dim = cfg.clusters, self.group_dim

    def _weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        xe = self.expand(x)
        attn = torch.sigmoid(self.group_attention(xe))  # (B, N, G)
        logits = self.assignment_bn(self.assignment(xe).reshape(b * n, -1))
        assign = F.softmax(logits.reshape(b, n, self.groups, self.clusters), dim=-1)
        return xe, assign * attn.unsqueeze(-1)  # (B, N, G, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        xe, a = self._weights(x)
        v = vlad_residuals(
            a.reshape(b, n * self.groups, self.clusters),
            xe.reshape(b, n * self.groups, self.group_dim),
            self.centers,
        )
        if self.l2_normalize:
            v = F.normalize(F.normalize(v, dim=-1).flatten(1), dim=-1).view_as(v)
        return v

    def frame_weights(self, x: torch.Tensor) -> torch.Tensor:
        return self._weights(x)[1].sum(dim=(-1, -2)) / self.groups
