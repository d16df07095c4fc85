"""The fusion network: per-modality aggregation + mapping → fusion → MLP classifier.

Frame-level modalities (face, head, body) are aggregated to tokens (the face with the
architecture's aggregator, the others with ``other_aggregation``); a clip-level modality
(audio) is one token. A linear map brings every token to ``fusion_dim`` (iQIYI §5.2: "a FC
layer to map all the video-level features into the same dimension"). A modality that a clip
lacks gives zero tokens and a False mask, and its encoder never sees the clip (so BatchNorm
statistics are not polluted by empty inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from vidpipe.models.aggregation import AGGREGATORS, Aggregator, build_aggregator
from vidpipe.models.classifier import MLPClassifier
from vidpipe.models.config import ARCHITECTURES, PROTOTYPE, ModalitySpec, ModelConfig
from vidpipe.models.fusion import FUSIONS, build_fusion


def resolve_arch(name: str) -> tuple[str, str]:
    """``famf`` → (attentionvlad, mlma); ``netvlad+mlma`` → (netvlad, mlma)."""
    key = name.strip().lower()
    if key in ARCHITECTURES:
        return ARCHITECTURES[key]
    if "+" in key:
        agg, fus = (part.strip() for part in key.split("+", 1))
        if agg in AGGREGATORS and fus in FUSIONS:
            return agg, fus
    raise ValueError(
        f"unknown architecture {name!r}: use {PROTOTYPE}, one of {', '.join(ARCHITECTURES)} or AGG+FUSION with "
        f"AGG in {{{', '.join(AGGREGATORS)}}} and FUSION in {{{', '.join(FUSIONS)}}}"
    )


class ModalityEncoder(nn.Module):
    """(B, N, D) frames + (B,) presence → (B, T, fusion_dim) tokens, zero where absent.

    Frames are first multiplied by the modality's scale, so every modality enters with a
    typical norm of 1 while a face's norm still tells its quality.
    """

    def __init__(self, spec: ModalitySpec, aggregator: Aggregator | None, fusion_dim: int) -> None:
        super().__init__()
        self.scale = spec.scale
        self.aggregator = aggregator
        self.num_tokens = aggregator.num_tokens if aggregator is not None else 1
        token_dim = aggregator.token_dim if aggregator is not None else spec.dim
        self.mapping = nn.Linear(token_dim, fusion_dim)
        self.fusion_dim = fusion_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        tokens = self.aggregator(x) if self.aggregator is not None else x[:, :1]
        return self.mapping(tokens)

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if bool(present.all()):
            return self.encode(x)
        out = x.new_zeros(x.shape[0], self.num_tokens, self.fusion_dim)
        idx = present.nonzero().squeeze(1)
        if idx.numel():
            out = out.index_copy(0, idx, self.encode(x.index_select(0, idx)).to(out.dtype))
        return out


class FusionNet(nn.Module):
    """Clip features of several modalities → identity logits (class 0 = noise)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not cfg.modalities:
            raise ValueError("the model needs at least one modality")
        if cfg.num_classes < 2:
            raise ValueError("the model needs at least one identity besides the noise class")
        self.cfg = cfg
        encoders = {}
        for i, spec in enumerate(cfg.modalities):
            if not spec.per_frame:
                agg = None
            else:
                name = cfg.aggregation if i == 0 else cfg.other_aggregation
                agg = build_aggregator(name, spec.dim, cfg.agg)
            encoders[spec.name] = ModalityEncoder(spec, agg, cfg.fusion_dim)
        self.encoders = nn.ModuleDict(encoders)
        self.num_tokens = sum(e.num_tokens for e in self.encoders.values())
        self.fusion = build_fusion(cfg.fusion, self.num_tokens, cfg.fusion_dim, cfg.fus)
        self.classifier = MLPClassifier(self.fusion.out_dim, cfg.hidden, cfg.num_classes, cfg.bn_momentum,
                                        cfg.dropout)

    def tokens(
        self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, fusion_dim) tokens and their (B, M) presence mask."""
        toks, masks = [], []
        for name, enc in self.encoders.items():
            toks.append(enc(feats[name], present[name]))
            masks.append(present[name].unsqueeze(1).expand(-1, enc.num_tokens))
        return torch.cat(toks, dim=1), torch.cat(masks, dim=1)

    def forward(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        x, mask = self.tokens(feats, present)
        return self.classifier(self.fusion(x, mask))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(aggregation parameters, the rest): FAMF trains them at different rates."""
        agg_ids = {
            id(p) for e in self.encoders.values() if e.aggregator is not None for p in e.aggregator.parameters()
        }
        agg = [p for p in self.parameters() if id(p) in agg_ids]
        rest = [p for p in self.parameters() if id(p) not in agg_ids]
        return agg, rest
