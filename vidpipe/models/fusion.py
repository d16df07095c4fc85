"""Multi-modal fusion: M modality tokens of one width D (B, M, D) + presence mask → a vector.

A token is absent (mask False) when its modality is missing for the clip: it is treated as a
zero vector whatever it holds, and no output draws from it. Every module is registered in
:data:`FUSIONS`.
Row-major convention: the papers' X ∈ R^{D×M} (columns = modalities) is our x (B, M, D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vidpipe.models.config import FusionConfig

_NEG = -1e4  # masked logit: representable in float16/bfloat16, exp() underflows to 0


class Fusion(nn.Module):
    """Base class: ``forward(x: (B, M, D), mask: (B, M) bool) -> (B, out_dim)``."""

    out_dim: int


FUSIONS: dict[str, type[Fusion]] = {}


def register_fusion(name: str) -> Callable[[type[Fusion]], type[Fusion]]:
    def deco(cls: type[Fusion]) -> type[Fusion]:
        FUSIONS[name] = cls
        return cls

    return deco


def build_fusion(name: str, num_tokens: int, dim: int, cfg: FusionConfig | None = None) -> Fusion:
    try:
        cls = FUSIONS[name]
    except KeyError:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(FUSIONS)}") from None
    return cls(num_tokens, dim, cfg or FusionConfig())


def gram(f: torch.Tensor) -> torch.Tensor:
    """Z = FᵀF in the papers' notation: (B, M, d) → (B, M, M), computed in float32."""
    f = f.float()
    return torch.bmm(f, f.transpose(1, 2))


@register_fusion("concat")
class Concat(Fusion):
    """Concatenation of the modality tokens."""

    def __init__(self, num_tokens: int, dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        self.out_dim = num_tokens * dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@register_fusion("mma")
class MMA(Fusion):
    """iQIYI-VID eq. 1–3: F = W_F X, Z = FᵀF, Y = softmax over i of Z_{i,j}, O = X + γXY.

    O_j = X_j + γ Σ_i X_i Y_{i,j}: each output is its input plus a convex mix of the present
    modalities, weighted by their Gram correlation.
    """

    def __init__(self, num_tokens: int, dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        self.project = nn.Linear(dim, cfg.mma_dim, bias=False)  # W_F ∈ R^{D̃×D}
        self.gamma = cfg.mma_gamma
        self.out_dim = num_tokens * dim

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Y (B, M, M), columns sum to 1 over the present rows i."""
        z = gram(self.project(_zero_absent(x, mask))).masked_fill(~mask.unsqueeze(-1), _NEG)
        return torch.softmax(z, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = _zero_absent(x, mask)
        y = self.attention(x, mask).to(x.dtype)
        return (x + self.gamma * torch.bmm(y.transpose(1, 2), x)).flatten(1)


def _zero_absent(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Absent tokens as zeros, whatever an upstream module left in them."""
    return x.masked_fill(~mask.unsqueeze(-1), 0)


@register_fusion("mlma")
class MLMA(Fusion):
    """FAMF eq. 5–6: Z = (W_{F1}W_{F2}X)ᵀ(W_{F1}W_{F2}X) with stacked projections D→128→32,
    Y_i = Σ_j X_j exp(Z_{j,i}) / Σ_i exp(Z_{j,i}); no residual, no L2 term (FAMF §3.3).

    Eq. 5 as printed normalises over the output index i: each input j spreads a unit of
    weight over the outputs, so a missing modality's slot is refilled from the present ones
    (FAMF §3.3). ``mlma_softmax_over="input"`` normalises over j instead, as MMA does. In both,
    an absent input is zero and gets no weight, so no output draws from it.
    """

    def __init__(self, num_tokens: int, dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        d1, d2 = cfg.mlma_dims
        self.project2 = nn.Linear(dim, d1, bias=False)  # W_{F2}
        self.project1 = nn.Linear(d1, d2, bias=False)  # W_{F1}
        if cfg.mlma_softmax_over not in ("output", "input"):
            raise ValueError("mlma_softmax_over must be 'output' or 'input'")
        self.over_output = cfg.mlma_softmax_over == "output"
        self.out_dim = num_tokens * dim

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A (B, M, M) with A[j, i] the weight of input j in output i; rows of absent j are 0."""
        z = gram(self.project1(self.project2(_zero_absent(x, mask))))
        if self.over_output:
            return torch.softmax(z, dim=2).masked_fill(~mask.unsqueeze(-1), 0)
        return torch.softmax(z.masked_fill(~mask.unsqueeze(-1), _NEG), dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = _zero_absent(x, mask)
        a = self.attention(x, mask).to(x.dtype)
        return torch.bmm(a.transpose(1, 2), x).flatten(1)
