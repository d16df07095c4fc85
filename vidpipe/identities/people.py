"""People: who is in a photo (against the gallery), and naming an unknown person.

Naming a cluster enrols its tracks' templates (each the mean of up to 32 good faces of
one appearance) as the person's gallery faces, with the source path
`cluster:<store>#<id>`, then tags the store again: the incremental pass re-matches only
the tracks the new faces can change, which includes every member of the cluster. A
cluster whose members disagree (average linkage at the same-person threshold splits them,
as clustering does) is refused: naming it would enrol several people under one name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vidpipe.config import Config
from vidpipe.identities.calibration import DEFAULTS, default_thresholds
from vidpipe.identities.cluster import read_clusters, split_by_average_linkage
from vidpipe.identities.encoder import FaceEncoder, IdentitiesError, store_fingerprint
from vidpipe.identities.gallery import Gallery, GalleryFace
from vidpipe.identities.match import UNKNOWN, Thresholds, top2
from vidpipe.identities.tag import TRACKS_TABLE, TagOptions, TagReport, tag
from vidpipe.identities.tracks import TRACKS_SCHEMA, list_matrix


class MixedClusterError(IdentitiesError):
    """An unknown person whose faces are of several people (a usage error: exit 2)."""


@dataclass
class IdentifiedFace:
    bbox: tuple[float, float, float, float]  # image pixels
    identity: str  # a gallery name or 'unknown'
    score: float  # cosine to the best person's template
    best: str | None  # the best-matching person, even when not accepted
    runner_up_score: float


def identify(photo: str | Path, db: str | Path, config: Config | None = None,
             thresholds: Thresholds | None = None, encoder: FaceEncoder | None = None) -> list[IdentifiedFace]:
    """Every face of `photo`, biggest first, matched against the gallery `db` (`encoder`:
    backends already built from `config`, to identify many photos without reloading)."""
    from vidpipe.identities.encoder import read_image

    image = read_image(photo)
    if image is None:
        raise IdentitiesError(f"{photo} cannot be decoded as an image")
    with Gallery.open(db) as gallery:
        templates, saved, fingerprint = gallery.templates(), gallery.calibration, gallery.fingerprint
    if fingerprint is None or not templates.names:
        raise IdentitiesError(f"gallery {db} has no people with a usable face")
    encoder = encoder or FaceEncoder(config)
    if encoder.fingerprint != fingerprint:
        raise IdentitiesError(f"gallery {db} was made with {fingerprint.describe()}, but photos would be embedded "
                              f"with {encoder.fingerprint.describe()}: use the gallery's face backend and weights")
    t = thresholds or default_thresholds(fingerprint, saved)
    faces = encoder.faces([image])[0]
    if not faces:
        return []
    found = top2(np.stack([f.embedding for f in faces]), templates.matrix)
    accepted = found.accepted(t)
    return [IdentifiedFace(tuple(float(v) for v in f.bbox), templates.names[found.best[i]] if accepted[i] else UNKNOWN,
                           float(found.best_score[i]), templates.names[found.best[i]], float(found.second_score[i]))
            for i, f in enumerate(faces)]


def name_cluster(out: str | Path, db: str | Path, cluster_id: int, name: str,
                 options: TagOptions | None = None) -> TagReport:
    """Enrol unknown person `cluster_id` of store `out` as `name` (a new or existing
    person of gallery `db`, created when missing), then tag the store again."""
    out = Path(out)
    if not name.strip():
        raise IdentitiesError("a person's name cannot be empty")
    members = read_clusters(out)
    members = members[members.cluster_id == int(cluster_id)]
    if members.empty:
        known = ", ".join(map(str, sorted(read_clusters(out).cluster_id.unique()))) or "none (run `vidpipe tag` first)"
        raise IdentitiesError(f"no unknown person {cluster_id} in {out}; unknown people: {known}")
    keys = set(members.clip_id + "#" + members.track.astype(str))
    faces = []
    for vid in sorted(members.video_id.unique()):
        table = pq.read_table(out / TRACKS_TABLE / f"{vid}.parquet", schema=TRACKS_SCHEMA)
        emb, boxes = list_matrix(table.column("embedding")), list_matrix(table.column("best_bbox"))
        for i, row in enumerate(table.select(["clip_id", "track", "best_time_s", "quality"]).to_pylist()):
            if f"{row['clip_id']}#{row['track']}" in keys:
                faces.append(GalleryFace(emb[i], tuple(boxes[i]), 1.0, row["quality"], row["best_time_s"]))
    fingerprint = store_fingerprint(out)
    link = (options.link if options and options.link is not None
            else DEFAULTS[fingerprint.embedder_key].threshold if fingerprint.embedder_key in DEFAULTS else None)
    if link is not None and len(faces) > 1:
        parts = split_by_average_linkage(np.stack([f.embedding for f in faces]), link)
        if parts.max() > 0:
            raise MixedClusterError(
                f"unknown person {cluster_id} mixes {parts.max() + 1} people (its faces disagree at the same-person "
                f"threshold {link:.3f}): not enrolled; tag the store again to re-cluster it")
    with Gallery.open(db, create=True) as gallery:
        gallery.require_fingerprint(fingerprint)
        gallery.put_source(name.strip(), f"cluster:{out.absolute()}#{int(cluster_id)}", "cluster", faces)
    return tag(out, db, options)
