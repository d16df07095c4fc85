"""Unknown people: face tracks that match nobody, clustered across the whole library.

HDBSCAN (scikit-learn's) on the tracks' templates. Templates are L2-normalised, so the
Euclidean distance it uses is a monotonic function of the cosine (d² = 2 - 2 cos): this
is clustering in cosine space with a fast tree index. `min_cluster_size` 3 (someone seen
in three clips is worth naming). HDBSCAN only knows relative density, so each cluster it
finds is then split by average linkage at the embedder's same-person threshold `link`: two
groups join only when the mean cosine over all their pairs clears it. (The old gate, each
member against the normalised mean of the others, let strangers through: normalising a
mean inflates it, and faces share a common component, so a dozen people passed as one.)

Only clear faces are clustered: a track whose best face's quality (the raw embedding's
norm) is under the embedder's floor (`calibration.QUALITY_FLOORS`) is left out. Blurred,
tiny or turned-away faces embed close to each other whoever they are, and made the mixed
clusters seen on real video. On a labelled slideshow of the 11 people of the shared photos
(116 tracks) plus the Hamilton clip, the Bond trailer and testvideo.mp4 (13 more tracks):
purity 0.933 -> 1.000, completeness 0.911 -> 0.911, 12 clusters (one of 13 tracks mixing
the Hamilton audience with three people) -> 11, one per person.

A clear track in no cluster (at least `min_singleton_faces` faces, quality over the floor)
is an unknown person of its own: one close-up of someone seen once can be named too.

Cluster ids are stable: after re-clustering, each new cluster takes the id of the old
cluster it shares the most tracks with (one to one); the others get ids never used
before. Each cluster has a representative face crop (its best-quality face) written to
OUT/unknown/crops/<id>.jpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vidpipe.identities.match import normalise
from vidpipe.util import atomic_path, shrink

UNKNOWN_DIR = "unknown"
CLUSTERS_SCHEMA = pa.schema([
    ("cluster_id", pa.int32()),
    ("clip_id", pa.string()),
    ("video_id", pa.string()),
    ("track", pa.int32()),
    ("representative", pa.bool_()),  # the member whose best face is the cluster's crop
])
CROP_SIDE = 160


@dataclass(frozen=True)
class ClusterOptions:
    min_cluster_size: int = 3
    min_samples: int | None = None  # HDBSCAN's default: min_cluster_size
    min_singleton_faces: int = 3  # a clear track alone is a person from this many faces (0: never)


@dataclass
class UnknownPerson:
    cluster_id: int
    n_clips: int
    n_videos: int
    crop: Path | None
    clip_ids: list[str]


def split_by_average_linkage(embeddings: np.ndarray, link: float) -> np.ndarray:
    """Group label per normalised embedding: average linkage in cosine, merging while the
    mean cosine between two groups' members is at least `link`."""
    if len(embeddings) < 2:
        return np.zeros(len(embeddings), np.int64)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=1 - link)
    return model.fit_predict(np.asarray(embeddings, np.float64)).astype(np.int64)


def cluster_faces(embeddings: np.ndarray, options: ClusterOptions = ClusterOptions(), link: float = 0.5,
                  quality: np.ndarray | None = None, min_quality: float | None = None,
                  n_faces: np.ndarray | None = None) -> np.ndarray:
    """Cluster label per normalised embedding (-1: in no cluster); see the module docstring.

    HDBSCAN is relative: it groups what is denser than the rest, at any distance, and it
    never calls the whole input one cluster. So each cluster it finds (or, when it finds
    none, the whole input) is split by average linkage at `link`, and the parts with at
    least `min_cluster_size` members are people. With `quality` and `min_quality`, faces
    under the floor are left out; with `n_faces` too, a clear track left over is a person
    alone when it has `min_singleton_faces` faces."""
    n = len(embeddings)
    labels = np.full(n, -1, np.int64)
    clear = np.ones(n, bool) if quality is None or min_quality is None else np.asarray(quality) >= min_quality
    chosen = np.flatnonzero(clear)
    if len(chosen) >= max(2, options.min_cluster_size):
        from sklearn.cluster import HDBSCAN

        x = np.asarray(embeddings, np.float64)[chosen]
        model = HDBSCAN(min_cluster_size=options.min_cluster_size, min_samples=options.min_samples, copy=True)
        found = model.fit_predict(x).astype(np.int64)
        if not (found >= 0).any():
            found = np.zeros(len(chosen), np.int64)
        for c in np.unique(found[found >= 0]):
            members = np.flatnonzero(found == c)
            parts = split_by_average_linkage(x[members], link)
            for part in np.unique(parts):
                if (parts == part).sum() >= options.min_cluster_size:
                    labels[chosen[members[parts == part]]] = labels.max() + 1
    # A clear face left over joins the person whose mean it matches, as a track joins an
    # enrolled person's template (the mean of a pure cluster is a fair template).
    left = np.flatnonzero((labels < 0) & clear)
    if len(left) and labels.max() >= 0:
        x = np.asarray(embeddings, np.float32)
        templates = normalise(np.stack([x[labels == c].sum(0) for c in range(labels.max() + 1)]))
        scores = x[left] @ templates.T
        best = scores.argmax(1)
        join = scores[np.arange(len(left)), best] >= link
        labels[left[join]] = best[join]
    if n_faces is not None and min_quality is not None and options.min_singleton_faces > 0:
        alone = np.flatnonzero((labels < 0) & clear & (np.asarray(n_faces) >= options.min_singleton_faces))
        parts = split_by_average_linkage(np.asarray(embeddings)[alone], link)  # one person seen twice is one
        for part in np.unique(parts):
            labels[alone[parts == part]] = labels.max() + 1
    return labels


def stable_ids(keys: list[str], labels: np.ndarray, previous: dict[str, int], next_id: int) -> tuple[np.ndarray, int]:
    """Map fresh cluster labels to lasting ids (see the module docstring); -1 stays -1."""
    overlaps: list[tuple[int, int, int]] = []  # (shared members, new label, old id)
    for label in np.unique(labels[labels >= 0]):
        olds = pd.Series([previous.get(k) for k, lab in zip(keys, labels) if lab == label]).dropna()
        for old, count in olds.value_counts().items():
            overlaps.append((int(count), int(label), int(old)))
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for _, label, old in sorted(overlaps, key=lambda o: (-o[0], o[1], o[2])):
        if label not in mapping and old not in used:
            mapping[label] = old
            used.add(old)
    for label in np.unique(labels[labels >= 0]):
        if int(label) not in mapping:
            mapping[int(label)] = next_id
            next_id += 1
    return np.array([mapping.get(int(lab), -1) for lab in labels], np.int64), next_id


def clusters_path(out: Path) -> Path:
    return Path(out) / UNKNOWN_DIR / "clusters.parquet"


def crop_path(out: Path, cluster_id: int) -> Path:
    return Path(out) / UNKNOWN_DIR / "crops" / f"{cluster_id}.jpg"


def read_clusters(out: Path) -> pd.DataFrame:
    path = clusters_path(out)
    return pq.read_table(path).to_pandas() if path.exists() else CLUSTERS_SCHEMA.empty_table().to_pandas()


def write_clusters(out: Path, members: pd.DataFrame) -> None:
    with atomic_path(clusters_path(out)) as tmp:
        pq.write_table(pa.Table.from_pandas(members, schema=CLUSTERS_SCHEMA, preserve_index=False), tmp)


def unknown_people(out: str | Path) -> list[UnknownPerson]:
    """The unknown people of a tagged store, most clips first."""
    members = read_clusters(Path(out))
    people = []
    for cluster_id, group in members.groupby("cluster_id"):
        crop = crop_path(Path(out), int(cluster_id))
        people.append(UnknownPerson(int(cluster_id), group.clip_id.nunique(), group.video_id.nunique(),
                                    crop if crop.exists() else None, sorted(group.clip_id.unique())))
    return sorted(people, key=lambda p: (-p.n_clips, p.cluster_id))


def grab_frame(path: Path, time_s: float) -> np.ndarray | None:
    """The frame shown at `time_s` (presentation timeline), upright BGR at source size."""
    import av

    from vidpipe.video import probe

    info = probe(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        target = time_s + info.start_time_s
        container.seek(max(0, int(target / stream.time_base)), stream=stream, backward=True)
        best = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            best = frame
            if float(frame.pts * stream.time_base) >= target - 1e-3:
                break
    if best is None:
        return None
    image = best.to_ndarray(format="bgr24")
    return np.ascontiguousarray(np.rot90(image, k=-info.rotation // 90)) if info.rotation else image


def write_crop(target: Path, video: Path, time_s: float, bbox: np.ndarray) -> bool:
    """A square-ish crop around the face (30 % margin), at most CROP_SIDE px; False when the
    video cannot be read any more."""
    import cv2

    from vidpipe.backends.base import crop
    from vidpipe.video import VideoError

    try:
        frame = grab_frame(video, time_s)
    except (VideoError, OSError):
        return False
    if frame is None:
        return False
    face, _ = shrink(crop(frame, np.asarray(bbox, np.float32), pad=0.3), CROP_SIDE)
    ok, data = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        return False
    with atomic_path(target) as tmp:
        tmp.write_bytes(data.tobytes())
    return True
