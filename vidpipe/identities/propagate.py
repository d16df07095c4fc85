"""Identities for clips without a recognisable face, from clothes and voice (iQIYI-VID §3.3).

Inside one video, the clips' descriptors for a cue are clustered: agglomerative, average
linkage, cosine distance below the cue's `distance`. Each cluster takes the majority
identity of its face-labelled clips (more than `min_share` of them), and its clips with no
face label inherit it. Their score is the vote share times the cosine between the clip's
descriptor and the mean of the clips that voted for it, so a clip far from the voters
ranks low. Only face labels vote: an inherited label never spreads further.

Cues, in order (a clip keeps the first it inherits):
- **clothes** (§3.3): the `bodies` table, the mean of the major person's body ReID
  embeddings per clip. Clothes change between shows, so clusters never cross videos.
  Distance 0.3: mgt_dancer's clips are 0.04-0.18 apart (heads/bodies branch, OSNet).
- **voice**: the `audio` table's speaker embedding, only for clips where it is the major
  character's voice (`voice_is_major`). Distance 0.25: GE2E on 3 s pieces of the shared
  LibriSpeech speakers clusters 5 speakers into 5 pure clusters from 0.25 to 0.35.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidpipe.identities.match import normalise
from vidpipe.identities.tracks import list_matrix


@dataclass(frozen=True)
class Cue:
    name: str  # what the user is told: 'clothes' | 'voice'
    table: str  # store table with an `embedding` per row and a `clip_id`
    distance: float  # average-linkage cosine distance under which clips share the cue
    only_if: str | None = None  # a boolean column a row must have true to count


@dataclass(frozen=True)
class PropagationOptions:
    body_distance: float = 0.3
    voice_distance: float = 0.25
    min_share: float = 0.5  # the winning identity needs more than this share of the labelled votes

    def cues(self) -> tuple[Cue, ...]:
        return (Cue("clothes", "bodies", self.body_distance), Cue("voice", "audio", self.voice_distance, "voice_is_major"))


@dataclass(frozen=True)
class Propagated:
    identity: str
    score: float
    cue: str = ""


def cluster(descriptors: np.ndarray, distance: float) -> np.ndarray:
    """Cluster label per row (normalised descriptors), average linkage in cosine space."""
    if len(descriptors) < 2:
        return np.zeros(len(descriptors), np.int64)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average")
    return model.fit_predict(descriptors).astype(np.int64)


def propagate(clip_ids: list[str], descriptors: np.ndarray, labels: list[str | None], distance: float,
              min_share: float = 0.5, cue: str = "") -> dict[str, Propagated]:
    """Inherited identities of one video's unlabelled clips.

    `descriptors[i]` is clip i's descriptor, `labels[i]` its identity from its face (None:
    no face, or a face that matched nobody)."""
    descriptors = normalise(descriptors)
    clusters = cluster(descriptors, distance)
    out: dict[str, Propagated] = {}
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        votes = Counter(labels[i] for i in members if labels[i] is not None)
        if not votes:
            continue
        winner, count = votes.most_common(1)[0]
        share = count / sum(votes.values())
        if share <= min_share:
            continue
        centre = normalise(descriptors[[i for i in members if labels[i] == winner]].mean(0))
        for i in members:
            if labels[i] is None:
                out[clip_ids[i]] = Propagated(winner, float(share * max(0.0, float(descriptors[i] @ centre))), cue)
    return out


def clip_descriptors(table_file: Path, clip_ids: list[str], only_if: str | None = None) -> tuple[list[str], np.ndarray]:
    """(clips with rows, the normalised mean of each clip's rows) from one video's file."""
    if not table_file.exists():
        return [], np.zeros((0, 0), np.float32)
    table = pq.read_table(table_file, columns=["clip_id", "embedding"] + ([only_if] if only_if else []))
    if only_if:
        table = table.filter(pc.fill_null(table.column(only_if), False))
    table = table.filter(pc.is_valid(table.column("embedding")))
    if not table.num_rows:
        return [], np.zeros((0, 0), np.float32)
    ids = np.asarray(table.column("clip_id").to_pylist())
    emb = normalise(list_matrix(table.column("embedding")))
    kept = [c for c in clip_ids if (ids == c).any()]
    return kept, np.stack([normalise(emb[ids == c].mean(0)) for c in kept]) if kept else np.zeros((0, 0), np.float32)


def propagate_video(out: Path, video_id: str, labels: dict[str, str | None], options: PropagationOptions,
                    cues: tuple[Cue, ...]) -> dict[str, Propagated]:
    """Every cue in turn over one video's clips; a clip keeps the first identity it inherits."""
    inherited: dict[str, Propagated] = {}
    for cue in cues:
        ids, descriptors = clip_descriptors(out / cue.table / f"{video_id}.parquet", sorted(labels), cue.only_if)
        found = propagate(ids, descriptors, [labels[c] for c in ids], cue.distance, options.min_share, cue.name)
        inherited.update({c: p for c, p in found.items() if c not in inherited})
    return inherited
