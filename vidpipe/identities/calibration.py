"""Calibrating the threshold and margin of open-set matching, and the shipped defaults.

Protocol (leave-one-out, open set): every face is a probe against the templates of the
other faces. As a *genuine* probe (its person keeps their other faces) it should be
accepted as the right person; as an *impostor* probe (its person is taken out of the
gallery) it should come out `unknown`. FPIR is the share of impostor probes accepted,
TPIR the share of genuine probes accepted as the right person. The calibrated pair is the
one with the highest TPIR at FPIR <= `target_fpir` (1 %): a stranger is rarely named.

`DEFAULTS` holds the result for each embedder on the shared photos (`CALIBRATION_SETS`,
one folder per person: 16 people, 125 photos); `benchmarks/bench_identities.py` reprints
the calibration and a test recomputes it.

A gallery with one face per person has no genuine probe (leaving the face out leaves the
person empty), so only FPIR can be measured on it: `calibrate` then falls back to the
embedder's default (given as `default`) and reports its FPIR on the gallery's faces. On
the shared photos with one random reference photo per person (20 draws), MobileFaceNet's
default (0.339, 0.146) names the right person for 89 % of the other photos and 0.6 % of
strangers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidpipe.identities.encoder import Fingerprint, IdentitiesError
from vidpipe.identities.match import NO_SCORE, Thresholds, normalise

CALIBRATION_SETS = ("faces/celebrity5_train", "faces/face_recognition_knn/train", "faces/deepface_ids")
TARGET_FPIR = 0.01

# Fingerprint.embedder_key -> calibrated (threshold, margin) on CALIBRATION_SETS.
DEFAULTS: dict[str, Thresholds] = {
    "arcface:mobilefacenet_128d.onnx": Thresholds(0.339, 0.146),  # TPIR 99.1 %, FPIR 0.8 %
    "arcface:mobilefacenet_128d_paddle.onnx": Thresholds(0.388, 0.0),  # TPIR 98.3 %, FPIR 0.8 %
    "dlib:dlib_face_recognition_resnet_model_v1.dat": Thresholds(0.942, 0.0),  # TPIR 95.7 %, FPIR 0.0 %
}

# Fingerprint.embedder_key -> the least quality (raw embedding norm) of a face clear enough
# to cluster (`cluster.py`). MobileFaceNet: faces of the shared photos have 7.7-22 (5th
# percentile 10.8, median 16.7); the blurred Hamilton audience 7.7-10.9 and it embedded
# close to anyone's low-quality faces (cosines up to 0.74 between strangers). Embedders
# not listed cluster every face and have no singleton unknown people.
QUALITY_FLOORS: dict[str, float] = {
    "arcface:mobilefacenet_128d.onnx": 11.0,
}


@dataclass
class Trials:
    """Leave-one-out scores: best and runner-up per probe, and whether the best is right."""

    genuine_best: np.ndarray
    genuine_second: np.ndarray
    genuine_correct: np.ndarray
    impostor_best: np.ndarray
    impostor_second: np.ndarray


@dataclass
class Calibration:
    thresholds: Thresholds
    tpir: float  # genuine probes accepted as the right person
    fpir: float  # impostor probes accepted (as anyone)
    wrong: float  # genuine probes accepted as someone else
    rank1: float  # genuine probes whose best template is right, whatever the threshold
    n_genuine: int
    n_impostor: int
    n_people: int
    target_fpir: float
    source: str = "leave-one-out"  # or 'default': one face per person, the embedder's default kept

    def summary(self) -> str:
        t = self.thresholds
        if self.source == "default":
            return (f"threshold {t.threshold:.3f}, margin {t.margin:.3f}: the embedder's default (calibrated on the "
                    f"shared photos), since every person has one face and leave-one-out needs two for a person; "
                    f"FPIR {self.fpir:.1%} on these {self.n_impostor} faces as strangers, {self.n_people} people "
                    f"(target FPIR <= {self.target_fpir:.0%}); enrol a second face per person to calibrate")
        return (f"threshold {t.threshold:.3f}, margin {t.margin:.3f}: TPIR {self.tpir:.1%}, FPIR {self.fpir:.1%}, "
                f"wrong {self.wrong:.1%}, rank-1 {self.rank1:.1%} ({self.n_genuine} genuine / {self.n_impostor} "
                f"impostor probes, {self.n_people} people, target FPIR <= {self.target_fpir:.0%})")


def leave_one_out(embeddings: np.ndarray, labels: list[str]) -> Trials:
    x = normalise(embeddings).astype(np.float64)
    labels_arr = np.asarray(labels)
    people = sorted(set(labels))
    member = np.stack([labels_arr == p for p in people]).astype(np.float64)  # (P, N)
    sums = member @ x
    counts = member.sum(1)
    g_best, g_second, g_ok, i_best, i_second = [], [], [], [], []
    for i, own in enumerate(labels_arr):
        k = people.index(own)
        s = sums.copy()
        s[k] -= x[i]
        alive = counts.copy()
        alive[k] -= 1
        for genuine in (True, False):
            keep = alive > 0 if genuine else (alive > 0) & (np.arange(len(people)) != k)
            if genuine and alive[k] == 0:
                continue
            scores = np.where(keep, (s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)) @ x[i], -np.inf)
            order = np.argsort(-scores)
            best = scores[order[0]]
            second = scores[order[1]] if keep.sum() > 1 else NO_SCORE
            if genuine:
                g_best.append(best), g_second.append(second), g_ok.append(order[0] == k)
            else:
                i_best.append(best), i_second.append(second)
    return Trials(*(np.asarray(v) for v in (g_best, g_second, g_ok, i_best, i_second)))


def evaluate(trials: Trials, t: Thresholds) -> tuple[float, float, float]:
    """(TPIR, FPIR, wrong) of one operating point."""
    g = (trials.genuine_best >= t.threshold) & (trials.genuine_best - trials.genuine_second >= t.margin)
    i = (trials.impostor_best >= t.threshold) & (trials.impostor_best - trials.impostor_second >= t.margin)
    ok = trials.genuine_correct
    return float(np.mean(g & ok)), float(np.mean(i)), float(np.mean(g & ~ok))


def calibrate(embeddings: np.ndarray, labels: list[str], target_fpir: float = TARGET_FPIR,
              default: Thresholds | None = None) -> Calibration:
    """The (threshold, margin) with the best TPIR at FPIR <= target_fpir. Thresholds are
    tried between consecutive observed scores; among equally good ones the middle of the
    run is taken, away from any single photo's score. With one face per person, `default`
    and its FPIR on these faces (see the module docstring)."""
    if len(set(labels)) < 2:
        raise IdentitiesError("calibration needs faces of at least two people")
    trials = leave_one_out(embeddings, labels)
    if not len(trials.genuine_best):
        if default is None:
            raise IdentitiesError("calibration needs at least one person with two faces or more")
        strangers = (trials.impostor_best >= default.threshold) & (
            trials.impostor_best - trials.impostor_second >= default.margin)
        return Calibration(default, float("nan"), float(np.mean(strangers)), float("nan"), float("nan"), 0,
                           len(trials.impostor_best), len(set(labels)), target_fpir, source="default")
    scores = np.unique(np.concatenate([trials.genuine_best, trials.impostor_best]))
    candidates = (scores[:-1] + scores[1:]) / 2 if len(scores) > 1 else scores
    spread = float(np.ptp(scores)) or 1.0
    margins = np.round(np.linspace(0, 0.25 * spread, 26), 4)
    best_key, best = None, []
    for m in margins:
        for t in candidates:
            tpir, fpir, _ = evaluate(trials, Thresholds(float(t), float(m)))
            if fpir > target_fpir:
                continue
            key = (round(tpir, 9), -round(fpir, 9), -m)
            if best_key is None or key > best_key:
                best_key, best = key, [Thresholds(float(t), float(m))]
            elif key == best_key:
                best.append(Thresholds(float(t), float(m)))
    if not best:
        raise IdentitiesError(f"no threshold reaches FPIR <= {target_fpir:.0%} on these faces")
    chosen = best[len(best) // 2]
    tpir, fpir, wrong = evaluate(trials, chosen)
    return Calibration(chosen, tpir, fpir, wrong, float(np.mean(trials.genuine_correct)), len(trials.genuine_best),
                       len(trials.impostor_best), len(set(labels)), target_fpir)


def default_thresholds(fingerprint: Fingerprint, saved: tuple[float, float] | None = None) -> Thresholds:
    """The gallery's saved calibration, else the shipped one for its embedder."""
    if saved is not None:
        return Thresholds(*saved)
    found = DEFAULTS.get(fingerprint.embedder_key)
    if found is None:
        raise IdentitiesError(
            f"no calibrated threshold for embedder {fingerprint.embedder_key}: give --threshold and --margin, "
            f"or calibrate on the gallery (`vidpipe gallery calibrate --save`)"
        )
    return found
