"""The FAMF classifier: 3 FC layers with BatchNorm between them (FAMF §4.3).

FAMF uses no dropout; our default recipe puts dropout after each hidden layer, because a
4096-wide MLP memorises a few hundred training clips. Output 0 is the open-set noise class
(distractor clips, iQIYI-VID-2019 label 0).
"""

from __future__ import annotations

from torch import nn


class MLPClassifier(nn.Sequential):
    """FC → BN → ReLU (→ Dropout) → FC → BN → ReLU (→ Dropout) → FC (logits)."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, bn_momentum: float = 0.1,
                 dropout: float = 0.0) -> None:
        def block(width_in: int) -> list[nn.Module]:
            layers = [nn.Linear(width_in, hidden), nn.BatchNorm1d(hidden, momentum=bn_momentum), nn.ReLU(inplace=True)]
            return layers + ([nn.Dropout(dropout)] if dropout > 0 else [])

        super().__init__(*block(in_dim), *block(hidden), nn.Linear(hidden, num_classes))
