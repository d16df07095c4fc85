"""Retrieval metrics exactly as the iQIYI-VID evaluation script computes them.

The official script (iQIYI-VID §6.2, eq. 4) scores a submission of one ranked clip list per
identity against the ground truth of the same shape:

* duplicate clips inside one submitted list are dropped (first occurrence kept);
* only the top 100 retrievals per identity count (the official script asserts ≤ 100; we
  truncate, which gives the same number whenever the official script would run);
* AP of an identity = Σ_j precision@(rank of j-th hit) / (number of ground-truth clips of the
  identity) — hits beyond the top 100 are simply lost, so recall limits AP;
* mAP = the sum of APs divided by the number of ground-truth identities: identities missing
  from the submission score 0, identities that are not in the ground truth are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

TOP_K = 100
NOISE_ID = "0"  # iQIYI-VID-2019: the label of distractor clips


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def average_precision(ranked: Sequence[str], positives: Iterable[str], top_k: int = TOP_K) -> float:
    """AP of one ranked list, normalised by the number of ground-truth positives (not hits)."""
    positives = set(positives)
    if not positives:
        raise ValueError("an identity with no ground-truth clips has no defined AP")
    hits = 0
    total = 0.0
    for position, clip in enumerate(_dedupe(ranked)[:top_k], start=1):
        if clip in positives:
            hits += 1
            total += hits / position
    return total / len(positives)


@dataclass(frozen=True)
class RetrievalScores:
    """mAP@top_k over the ground-truth identities, plus rank-1 (first result correct)."""

    map: float
    rank1: float
    num_identities: int
    per_identity: dict[str, float] = field(default_factory=dict, repr=False)


def evaluate_retrieval(
    submission: Mapping[str, Sequence[str]],
    ground_truth: Mapping[str, Sequence[str]],
    top_k: int = TOP_K,
) -> RetrievalScores:
    """Score ranked lists per identity against ground-truth clip lists per identity."""
    if not ground_truth:
        raise ValueError("the ground truth holds no identity")
    per_identity: dict[str, float] = {}
    first_hits = 0
    for identity, positives in ground_truth.items():
        ranked = _dedupe(submission.get(identity, ()))
        per_identity[identity] = average_precision(ranked, positives, top_k) if ranked else 0.0
        if ranked and ranked[0] in set(positives):
            first_hits += 1
    n = len(ground_truth)
    return RetrievalScores(
        map=sum(per_identity.values()) / n,
        rank1=first_hits / n,
        num_identities=n,
        per_identity=per_identity,
    )


def mean_average_precision(
    submission: Mapping[str, Sequence[str]],
    ground_truth: Mapping[str, Sequence[str]],
    top_k: int = TOP_K,
) -> float:
    """mAP@top_k exactly as the iQIYI-VID evaluation script."""
    return evaluate_retrieval(submission, ground_truth, top_k).map


def clip_accuracy(predicted: Mapping[str, str], truth: Mapping[str, str]) -> float:
    """Rank-1 identification accuracy over the labelled clips (a missing prediction is wrong)."""
    if not truth:
        raise ValueError("no labelled clip to score")
    return sum(predicted.get(clip) == identity for clip, identity in truth.items()) / len(truth)


def rank_clips(
    scores: np.ndarray, clip_ids: Sequence[str], classes: Sequence[str], top_k: int = TOP_K,
    skip: Iterable[str] = (NOISE_ID,),
) -> dict[str, list[tuple[str, float]]]:
    """Per class (the noise class skipped): the ``top_k`` clips ranked by that class's score
    column, best first, with their scores. ``scores`` is (clips, classes)."""
    skip = set(skip)
    k = min(top_k, scores.shape[0])
    out: dict[str, list[tuple[str, float]]] = {}
    for c, identity in enumerate(classes):
        if identity in skip:
            continue
        col = scores[:, c]
        top = np.argpartition(-col, k - 1)[:k] if k < len(col) else np.arange(len(col))
        top = top[np.lexsort((top, -col[top]))]  # by score, ties by clip order
        out[identity] = [(clip_ids[i], float(col[i])) for i in top]
    return out


def scores_map(scores: np.ndarray, clip_ids: Sequence[str], classes: Sequence[str],
               labels: Sequence[str | None], top_k: int = TOP_K) -> float:
    """mAP@top_k of a (clips, classes) score matrix against the clips' own labels (noise and
    unlabelled clips are distractors)."""
    truth: dict[str, list[str]] = {}
    for clip, label in zip(clip_ids, labels):
        if label is not None and label != NOISE_ID:
            truth.setdefault(label, []).append(clip)
    lists = rank_clips(scores, clip_ids, classes, top_k)
    return evaluate_retrieval({k: [c for c, _ in v] for k, v in lists.items()}, truth, top_k).map
