"""Face tracks: the faces of one person in one clip, and their template.

Dataset mode (the major-character rule on): one track per clip, the major character's
faces (`faces.major`); when the rule did not run (`major` null), the clip's faces are
grouped as below and the track with the most faces is the major character's.

Library mode (rule off): every face is grouped into per-person tracks. Frames are taken in
time order and each face joins the track it matches best (Hungarian assignment, so two
faces of one frame never share a track). A face joins when its cosine to the track's mean
clears `link`, or when its box overlaps the track's last box by IoU >= 0.5 and the cosine
is not negative (the same head, turned away). Tracks never close: a person who leaves the
frame and comes back joins their track again by the face.

A track's template is the normalised mean of its `top_k` best faces by quality (iQIYI-VID
§5.1 keeps the top 32) among its clear faces (quality at least the embedder's floor,
`calibration.QUALITY_FLOORS`) when it has any: a shot's blurred frames pull the mean
towards every blurred face, away from the person. With one reference photo per person, on
132 shots of the other photos of the 11 people of `cluster.py`, filmed zooming with motion
blur on some frames: 113 -> 116 shots named right, none named wrong. Its time range runs
from its first face to one sampling period after its last, snapped to the clip's cuts
when within a period of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidpipe.identities.match import normalise

F32_LIST = pa.list_(pa.float32())
TRACKS_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("video_id", pa.string()),
    ("track", pa.int32()),  # 0-based within the clip, by first appearance, then left to right
    ("major", pa.bool_()),  # the clip's major character
    ("start_s", pa.float64()),  # presentation timeline
    ("end_s", pa.float64()),
    ("n_faces", pa.int32()),
    ("quality", pa.float32()),  # of its best face
    ("best_frame_index", pa.int32()),  # where its best face is (for crops)
    ("best_time_s", pa.float64()),
    ("best_bbox", F32_LIST),  # source pixels
    ("embedding", F32_LIST),  # template: normalised mean of the top_k faces by quality
])
SAME_HEAD_IOU = 0.5


@dataclass
class ClipFaces:
    """The face rows of one clip, as arrays."""

    time_s: np.ndarray
    frame_index: np.ndarray
    bbox: np.ndarray  # (n, 4)
    quality: np.ndarray
    embedding: np.ndarray  # (n, d), normalised
    major: np.ndarray | None  # (n,) bool, None when the major-character rule did not run


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def _iou(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) with every box in b (m, 4), given their areas."""
    inter = _area(np.concatenate([np.maximum(a[:, None, :2], b[None, :, :2]),
                                  np.minimum(a[:, None, 2:], b[None, :, 2:])], axis=2))
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def group_faces(faces: ClipFaces, link: float) -> np.ndarray:
    """Track id of every face (0-based, by first appearance then left to right)."""
    from scipy.optimize import linear_sum_assignment

    n = len(faces.time_s)
    labels = np.full(n, -1, np.int64)
    sums = np.zeros((n, faces.embedding.shape[1]), np.float64)  # at most one track per face
    last_box = np.zeros((n, 4), np.float32)
    area = _area(faces.bbox)
    last_area = np.zeros(n, np.float32)
    tracks = 0
    order = np.lexsort((faces.bbox[:, 0], faces.frame_index))
    starts = np.flatnonzero(np.r_[True, np.diff(faces.frame_index[order]) != 0])
    for idx in np.split(order, starts[1:]):
        assigned: dict[int, int] = {}
        if tracks:
            cos = faces.embedding[idx] @ normalise(sums[:tracks]).T
            iou = _iou(faces.bbox[idx], last_box[:tracks], area[idx], last_area[:tracks])
            ok = (cos >= link) | ((iou >= SAME_HEAD_IOU) & (cos >= 0))
            if ok.any():
                rows, cols = linear_sum_assignment(np.where(ok, -(cos + iou), 1e6))
                assigned = {int(r): int(c) for r, c in zip(rows, cols) if ok[r, c]}
        for r, i in enumerate(idx):
            t = assigned.get(r)
            if t is None:
                t, tracks = tracks, tracks + 1
            labels[i] = t
            sums[t] += faces.embedding[i]
            last_box[t], last_area[t] = faces.bbox[i], area[i]
    return labels


def clip_tracks(faces: ClipFaces, library: bool, link: float) -> tuple[np.ndarray, int | None]:
    """(track id per face, -1 for faces in no kept track; the major track or None).

    Library mode keeps every track; dataset mode keeps only the major character's."""
    n = len(faces.time_s)
    if n == 0:
        return np.zeros(0, np.int64), None
    if not library and faces.major is not None:
        labels = np.where(faces.major, 0, -1)
        return labels, (0 if (labels == 0).any() else None)
    labels = group_faces(faces, link)
    sizes = np.bincount(labels)
    area = _area(faces.bbox)
    mean_area = np.bincount(labels, weights=area) / sizes
    major = int(np.lexsort((-mean_area, -sizes))[0])
    if library:
        return labels, major
    return np.where(labels == major, 0, -1), 0


def track_template(embedding: np.ndarray, quality: np.ndarray, top_k: int, min_quality: float | None) -> np.ndarray:
    """The normalised mean of the `top_k` best faces by quality, among the clear ones
    (quality >= min_quality) when there are any."""
    best = np.argsort(-quality, kind="stable")
    if min_quality is not None and quality[best[0]] >= min_quality:
        best = best[quality[best] >= min_quality]
    return normalise(embedding[best[:top_k]].mean(0))


def track_rows(clip_id: str, video_id: str, clip: tuple[float, float], faces: ClipFaces, labels: np.ndarray,
               major: int | None, top_k: int, period_s: float, min_quality: float | None = None) -> list[dict]:
    """One TRACKS_SCHEMA row per track. Faces are sampled every `period_s`, so a track
    whose first (last) face is within one period of the clip's start (end) is taken to
    run from (to) the cut, which is exact."""
    rows = []
    for t in range(int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0):
        idx = np.flatnonzero(labels == t)
        best = idx[np.argsort(-faces.quality[idx], kind="stable")]
        template = track_template(faces.embedding[idx], faces.quality[idx], top_k, min_quality)
        first, last = float(faces.time_s[idx].min()), float(faces.time_s[idx].max()) + period_s
        start = clip[0] if first - clip[0] <= period_s else first
        end = clip[1] if clip[1] - last <= period_s else last
        rows.append(dict(
            clip_id=clip_id, video_id=video_id, track=t, major=(t == major), start_s=start,
            end_s=float(min(max(end, start), clip[1])), n_faces=len(idx),
            quality=float(faces.quality[best[0]]), best_frame_index=int(faces.frame_index[best[0]]),
            best_time_s=float(faces.time_s[best[0]]), best_bbox=faces.bbox[best[0]].astype(np.float32),
            embedding=template.astype(np.float32),
        ))
    return rows


def list_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float32> column of equal-length vectors as an (n, d) float32 matrix."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 0), np.float32)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(arr), -1)


def video_tracks(faces_file: Path, clips: dict[str, tuple[float, float]], video_id: str, library: bool, link: float,
                 top_k: int, period_s: float, min_quality: float | None = None) -> pa.Table:
    """The tracks of one video from its `faces` file; `clips` maps each kept clip to its
    (start, end)."""
    table = pq.read_table(faces_file, columns=["clip_id", "frame_index", "time_s", "bbox", "quality",
                                               "embedding", "major"]) if faces_file.exists() else None
    rows: list[dict] = []
    if table is not None and table.num_rows:
        clip_ids = np.asarray(table.column("clip_id").to_pylist())
        emb = list_matrix(table.column("embedding"))
        bbox = list_matrix(table.column("bbox"))
        times = table.column("time_s").to_numpy()
        frames = table.column("frame_index").to_numpy()
        quality = table.column("quality").to_numpy()
        major_col = table.column("major")
        for clip_id in sorted(set(clip_ids) & set(clips)):
            sel = np.flatnonzero(clip_ids == clip_id)
            major = None if major_col.null_count == len(major_col) else np.asarray(
                major_col.take(pa.array(sel)).fill_null(False).to_numpy(zero_copy_only=False), bool)
            faces = ClipFaces(times[sel], frames[sel], bbox[sel], quality[sel], normalise(emb[sel]), major)
            labels, major_track = clip_tracks(faces, library, link)
            rows += track_rows(clip_id, video_id, clips[clip_id], faces, labels, major_track, top_k, period_s,
                               min_quality)
    return pa.Table.from_pylist(rows, schema=TRACKS_SCHEMA)
