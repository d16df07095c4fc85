"""Open-set matching: a face (or a clip's face template) against every person's template.

A person's template is the normalised mean of their gallery faces; the score is the cosine
to it. A query is that person when the best score clears the threshold AND beats the
runner-up person by the margin, else it is `unknown`. Leave-one-out on the shared photos
chose this scoring over the best single gallery photo: the same rank-1 and fewer
confident strangers at the same threshold (see `calibration.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNKNOWN = "unknown"
NO_SCORE = -1.0  # the runner-up score when there is no runner-up (lowest cosine)


@dataclass(frozen=True)
class Thresholds:
    threshold: float  # minimum cosine to the person's template
    margin: float  # minimum lead over the runner-up person


@dataclass
class Top2:
    """For each query: index of the best and second template (-1: none) and their scores."""

    best: np.ndarray
    best_score: np.ndarray
    second: np.ndarray
    second_score: np.ndarray

    def accepted(self, t: Thresholds) -> np.ndarray:
        return (self.best >= 0) & (self.best_score >= t.threshold) & (self.best_score - self.second_score >= t.margin)


def top2(queries: np.ndarray, templates: np.ndarray, block: int = 65536) -> Top2:
    """Best and runner-up template per query (cosines of normalised vectors), in blocks
    so memory stays bounded for any number of queries."""
    n, p = len(queries), len(templates)
    out = Top2(np.full(n, -1, np.int64), np.full(n, NO_SCORE, np.float32),
               np.full(n, -1, np.int64), np.full(n, NO_SCORE, np.float32))
    if n == 0 or p == 0:
        return out
    for i in range(0, n, block):
        s = queries[i : i + block] @ templates.T
        order = np.argsort(-s, axis=1, kind="stable")[:, :2]
        rows = np.arange(len(s))
        out.best[i : i + len(s)] = order[:, 0]
        out.best_score[i : i + len(s)] = s[rows, order[:, 0]]
        if p > 1:
            out.second[i : i + len(s)] = order[:, 1]
            out.second_score[i : i + len(s)] = s[rows, order[:, 1]]
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
