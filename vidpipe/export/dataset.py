"""Which clips a dataset gets, with which label, in which split.

- **Labelled clips**: a reviewer's standing decision (see `final_labels`), else, unless only
  reviewed clips are wanted, a proposal scoring at least `min_score`. Rejected clips, and
  clips whose reviews disagree and await the arbiter, stay out.
- **Distractors** (iQIYI-VID §4: people outside the identities, in val and test only): clips
  reviewers marked as noise, plus (by default) unreviewed clips of the unknown-people
  clusters — faces seen again and again that match nobody in the gallery.
- **Split** 40/30/30, stratified: each identity's clips are shuffled with the seed and cut
  by largest remainders, with at least one clip in every split for an identity with three
  or more (one clip: train; two: train and val). Distractors are split half and half
  between val and test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vidpipe.identities.cluster import read_clusters
from vidpipe.identities.match import UNKNOWN
from vidpipe.identities.table import NOISE
from vidpipe.review.agreement import Agreement
from vidpipe.review.db import Decision, final_labels
from vidpipe.review.queue import StoreView

SPLITS = ("train", "val", "test")
FRACTIONS = (0.4, 0.3, 0.3)
COLUMNS = ["clip_id", "video_id", "path", "start_s", "end_s", "duration_s", "identity", "label_source", "score"]


@dataclass
class Dataset:
    """The exported clips (one row each: COLUMNS + split, name, identity_id) and what the
    report needs besides."""

    clips: pd.DataFrame
    identities: list[str]  # identity_id i is identities[i - 1]; 0 is noise
    agreement: list[Agreement] = field(default_factory=list)
    store: str = ""
    options: dict = field(default_factory=dict)


def labelled_clips(view: StoreView, decisions: list[Decision], min_score: float | None, min_passes: int,
                   unknown_distractors: bool) -> pd.DataFrame:
    """COLUMNS for every clip that enters the dataset; identity '0' marks a distractor."""
    final = final_labels(decisions, min_passes)
    reviewed = {d.clip_id for d in decisions}
    clustered = set(read_clusters(view.out).clip_id) if unknown_distractors else set()
    rows = []
    for clip in view.clips.values():
        if (clip.clip_id, "") in final:  # decisions on one person of a library clip label no clip
            identity, source, score = final[clip.clip_id, ""].label, "review", 1.0
            if identity == UNKNOWN:
                continue  # rejected: not the proposed person, and nobody knows who
        elif clip.clip_id in reviewed:
            continue  # disputed, or not reviewed as often as asked
        elif min_score is not None and clip.proposed != UNKNOWN and (clip.score or -math.inf) >= min_score:
            identity, source, score = clip.proposed, clip.source, clip.score
        elif clip.proposed == UNKNOWN and clip.clip_id in clustered:
            identity, source, score = NOISE, "unknown_cluster", clip.score
        else:
            continue
        video = view.videos[clip.video_id]
        rows.append((clip.clip_id, clip.video_id, str(video.path), clip.start_s, clip.end_s, clip.duration_s,
                     identity, source, score))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("clip_id", ignore_index=True)


def split_counts(n: int, fractions: tuple[float, ...] = FRACTIONS) -> list[int]:
    """Clips per split for an identity of n clips: largest remainders, which with 40/30/30
    leave no split empty once n >= 3 (n = 1: train; n = 2: train and val)."""
    if n < len(fractions):
        return [1 if i < n else 0 for i in range(len(fractions))]
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    while sum(counts) < n:
        counts[max(range(len(raw)), key=lambda i: (raw[i] - counts[i], -i))] += 1
    return counts


def assign_splits(clips: pd.DataFrame, seed: int, prefix: str = "VIDPIPE_VID") -> pd.DataFrame:
    """`clips` with `split`, `identity_id` (1… by name, 0 for distractors) and `name`
    (`{prefix}_{SPLIT}_{n:07d}`, numbered in a seeded random order so that names say
    nothing about who is in them). The same clips and seed always give the same result."""
    rng = np.random.default_rng(seed)
    split = pd.Series("", index=clips.index, dtype=object)
    people = sorted(set(clips.identity) - {NOISE})
    for identity in people:
        members = clips.index[clips.identity == identity].to_numpy()
        members = members[rng.permutation(len(members))]
        bounds = np.cumsum([0, *split_counts(len(members))])
        for s, name in enumerate(SPLITS):
            split[members[bounds[s]:bounds[s + 1]]] = name
    noise = clips.index[clips.identity == NOISE].to_numpy()
    noise = noise[rng.permutation(len(noise))]
    half = (len(noise) + 1) // 2
    split[noise[:half]], split[noise[half:]] = "val", "test"
    out = clips.assign(split=split, identity_id=[0 if i == NOISE else people.index(i) + 1 for i in clips.identity])
    names = pd.Series("", index=out.index, dtype=object)
    for name in SPLITS:
        members = out.index[out.split == name].to_numpy()
        members = members[rng.permutation(len(members))]
        names[members] = [f"{prefix}_{name.upper()}_{k + 1:07d}" for k in range(len(members))]
    return out.assign(name=names).sort_values(["split", "name"], key=lambda s: s.map(SPLITS.index) if s.name == "split" else s,
                                              ignore_index=True)
