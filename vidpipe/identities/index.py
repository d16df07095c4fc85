"""A face index over a feature store: every face embedding in one float32 matrix.

Exhaustive cosine search with numpy matrix products in blocks (BLAS does the work; the
block bounds the memory of the scores for any store size). Exact, no training, no extra
dependency; at 100,000 faces a query costs a few milliseconds (benchmarks/bench_identities.py),
far below embedding the photo itself. Rows are sorted by clip so the best face of every
clip is one `np.maximum.reduceat`.

Cached in OUT/index/ (`embeddings.npy`, memory-mapped; `rows.parquet`; `state.json`) and
rebuilt when the store's videos changed (their ids and config hashes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidpipe.identities.tracks import list_matrix
from vidpipe.util import atomic_path, atomic_write_text

INDEX_DIR = "index"
BLOCK_ROWS = 65536


class FaceIndex:
    def __init__(self, embeddings: np.ndarray, clips: list[str], starts: np.ndarray, time_s: np.ndarray) -> None:
        self.embeddings = embeddings  # (n, d) float32, rows grouped by clip
        self.clips = clips  # clip ids, in row order
        self.starts = starts  # first row of each clip
        self.time_s = time_s  # (n,) presentation time of each face

    def __len__(self) -> int:
        return len(self.time_s)

    @classmethod
    def from_rows(cls, clip_ids: np.ndarray, time_s: np.ndarray, embeddings: np.ndarray) -> "FaceIndex":
        order = np.lexsort((time_s, clip_ids))
        clip_ids, time_s, embeddings = clip_ids[order], time_s[order], np.ascontiguousarray(embeddings[order], np.float32)
        if not len(clip_ids):
            return cls(embeddings.reshape(0, embeddings.shape[1] if embeddings.ndim == 2 else 0), [], np.zeros(0, np.int64), time_s)
        starts = np.flatnonzero(np.r_[True, clip_ids[1:] != clip_ids[:-1]])
        return cls(embeddings, clip_ids[starts].tolist(), starts, time_s)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine of every face to the normalised query, in blocks of BLOCK_ROWS."""
        out = np.empty(len(self), np.float32)
        q = np.asarray(query, np.float32)
        for i in range(0, len(self), BLOCK_ROWS):
            np.matmul(self.embeddings[i : i + BLOCK_ROWS], q, out=out[i : i + BLOCK_ROWS])
        return out

    def best_per_clip(self, scores: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(scores, self.starts) if len(scores) else np.zeros(0, np.float32)

    def rows_of(self, clip: int) -> slice:
        end = self.starts[clip + 1] if clip + 1 < len(self.starts) else len(self)
        return slice(int(self.starts[clip]), int(end))

    # ---------------------------------------------------------------- building and caching

    @classmethod
    def build(cls, out: Path) -> "FaceIndex":
        """Every face of the store's kept clips, read table by table in bounded batches."""
        from vidpipe.store import iter_batches

        clip_ids, times, parts = [], [], []
        for batch in iter_batches(out, "faces", ["clip_id", "time_s", "embedding"]):
            clip_ids.append(batch.column("clip_id").to_numpy(zero_copy_only=False))
            times.append(batch.column("time_s").to_numpy())
            parts.append(list_matrix(batch.column("embedding")))
        if not parts or not sum(len(p) for p in parts):
            return cls.from_rows(np.zeros(0, object), np.zeros(0), np.zeros((0, 0), np.float32))
        return cls.from_rows(np.concatenate(clip_ids), np.concatenate(times), np.concatenate([p for p in parts if len(p)]))

    def save(self, directory: Path) -> None:
        with atomic_path(directory / "embeddings.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, self.embeddings)
        clip_of_row = np.repeat(np.arange(len(self.clips)), np.diff(np.r_[self.starts, len(self)]))
        table = pa.table({"clip_id": pa.array(np.asarray(self.clips, object)[clip_of_row] if len(self) else [], pa.string()),
                          "time_s": pa.array(self.time_s, pa.float64())})
        with atomic_path(directory / "rows.parquet") as tmp:
            pq.write_table(table, tmp)

    @classmethod
    def load_saved(cls, directory: Path) -> "FaceIndex":
        embeddings = np.load(directory / "embeddings.npy", mmap_mode="r")
        rows = pq.read_table(directory / "rows.parquet")
        clip_ids = rows.column("clip_id")
        if not len(clip_ids):
            return cls(embeddings, [], np.zeros(0, np.int64), np.zeros(0))
        same = pc.equal(clip_ids.slice(1), clip_ids.slice(0, len(clip_ids) - 1)).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, ~same])
        return cls(embeddings, clip_ids.take(pa.array(starts)).to_pylist(), starts, rows.column("time_s").to_numpy())


def _videos_key(out: Path) -> dict[str, str]:
    from vidpipe.store import read_table

    videos = read_table(out, "videos", ["video_id", "status", "config_hash"])
    videos = videos[videos.status == "ok"]
    return dict(zip(videos.video_id, videos.config_hash))


def face_index(out: str | Path) -> FaceIndex:
    """The store's face index, from OUT/index/ when it is up to date, else rebuilt there."""
    out = Path(out)
    directory = out / INDEX_DIR
    key = _videos_key(out)
    try:
        if json.loads((directory / "state.json").read_text()) == key:
            return FaceIndex.load_saved(directory)
    except (OSError, ValueError):
        pass
    index = FaceIndex.build(out)
    index.save(directory)
    atomic_write_text(directory / "state.json", json.dumps(key, sort_keys=True))
    return index
