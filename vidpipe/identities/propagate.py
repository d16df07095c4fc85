"""Identities for clips without a recognisable face, from their clothes (iQIYI-VID §3.3).

Inside one video, the clips' body descriptors (the mean of the major person's body ReID
embeddings, normalised) are clustered: agglomerative, average linkage, cosine distance
below `distance`. Clothes change between videos, so clusters never cross videos. Each
cluster takes the majority identity of its face-labelled clips (more than `min_share` of
them), and its clips with no face label inherit it. Their score is the vote share times
the cosine between the clip's body and the mean body of the clips that voted for it, so a
clip far from the voters ranks low.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vidpipe.identities.match import normalise
from vidpipe.identities.tracks import list_matrix


@dataclass(frozen=True)
class PropagationOptions:
    distance: float = 0.3  # cosine distance (average linkage) under which clips share clothes
    min_share: float = 0.5  # the winning identity needs more than this share of the labelled votes


@dataclass(frozen=True)
class Propagated:
    identity: str
    score: float


def cluster_bodies(bodies: np.ndarray, distance: float) -> np.ndarray:
    """Cluster label per row (normalised body descriptors), average linkage in cosine space."""
    if len(bodies) < 2:
        return np.zeros(len(bodies), np.int64)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average")
    return model.fit_predict(bodies).astype(np.int64)


def propagate(clip_ids: list[str], bodies: np.ndarray, labels: list[str | None],
              options: PropagationOptions = PropagationOptions()) -> dict[str, Propagated]:
    """Inherited identities of one video's unlabelled clips.

    `bodies[i]` is clip i's body descriptor, `labels[i]` its identity from its face (None:
    no face, or a face that matched nobody)."""
    bodies = normalise(bodies)
    clusters = cluster_bodies(bodies, options.distance)
    out: dict[str, Propagated] = {}
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        votes = Counter(labels[i] for i in members if labels[i] is not None)
        if not votes:
            continue
        winner, count = votes.most_common(1)[0]
        share = count / sum(votes.values())
        if share <= options.min_share:
            continue
        voters = [i for i in members if labels[i] == winner]
        centre = normalise(bodies[voters].mean(0))
        for i in members:
            if labels[i] is None:
                out[clip_ids[i]] = Propagated(winner, float(share * max(0.0, float(bodies[i] @ centre))))
    return out


def clip_bodies(bodies_file: Path, clip_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """(clips that have body rows, their descriptors) from one video's `bodies` file."""
    if not bodies_file.exists():
        return [], np.zeros((0, 0), np.float32)
    table = pq.read_table(bodies_file, columns=["clip_id", "embedding"])
    if not table.num_rows:
        return [], np.zeros((0, 0), np.float32)
    ids = np.asarray(table.column("clip_id").to_pylist())
    emb = normalise(list_matrix(table.column("embedding")))
    kept = [c for c in clip_ids if (ids == c).any()]
    return kept, np.stack([normalise(emb[ids == c].mean(0)) for c in kept]) if kept else np.zeros((0, 0), np.float32)
