"""The FAMF classifier: 3 FC layers with BatchNorm between them, no dropout (FAMF §4.3).

Output 0 is the open-set noise class (distractor clips, iQIYI-VID-2019 label 0).
"""

from __future__ import annotations

from torch import nn


class MLPClassifier(nn.Sequential):
    """FC → BN → ReLU → FC → BN → ReLU → FC (logits)."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, bn_momentum: float = 0.1) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
