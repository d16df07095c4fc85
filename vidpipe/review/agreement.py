"""How far two reviewers agree (iQIYI-VID §3.4 had every clip labelled twice).

Per identity (the one proposed to both reviewers) and overall: the clips both passes
labelled, the share given the same label, and Cohen's kappa, the agreement beyond what
chance gives from each reviewer's own label frequencies. Kappa is undefined (None) when
both reviewers used a single, identical label for every clip: chance then explains all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

from vidpipe.review.db import Decision

OVERALL = "(all)"


@dataclass(frozen=True)
class Agreement:
    identity: str
    clips: int  # clips labelled in both passes
    agreed: int
    kappa: float | None
    disputed: int  # disagreements not yet settled by the arbiter (pass 3)

    @property
    def rate(self) -> float | None:
        return self.agreed / self.clips if self.clips else None


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    if not a or set(a) == set(b) and len(set(a)) == 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(cohen_kappa_score(a, b))
    return None if value != value else value  # nan: undefined


def agreement(decisions: Iterable[Decision]) -> list[Agreement]:
    """One row per identity proposed to clips labelled twice, then the overall row."""
    by_clip: dict[tuple[str, str], dict[int, Decision]] = {}
    for d in decisions:
        by_clip.setdefault(d.item, {})[d.pass_] = d
    pairs: dict[str, list[tuple[str, str, bool]]] = {}
    for passes in by_clip.values():
        if 1 in passes and 2 in passes:
            first, second = passes[1], passes[2]
            pairs.setdefault(first.proposed or "unknown", []).append((first.label, second.label, 3 in passes))
    rows = []
    everything = [p for group in pairs.values() for p in group]
    for identity, group in [*sorted(pairs.items()), (OVERALL, everything)]:
        a, b = [p[0] for p in group], [p[1] for p in group]
        agreed = sum(x == y for x, y in zip(a, b))
        disputed = sum(x != y and not settled for x, y, settled in group)
        rows.append(Agreement(identity, len(group), agreed, cohen_kappa(a, b), disputed))
    return rows
