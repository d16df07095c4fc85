"""A face index over a feature store: every face embedding in one float32 matrix.

Exhaustive cosine search with numpy matrix products in blocks (BLAS does the work; the
block bounds the memory of the scores for any store size). Exact, no training, no extra
dependency; at 100,000 faces a query costs a few milliseconds (benchmarks/bench_identities.py),
far below embedding the photo itself. Rows are sorted by clip so the best face of every
clip is one `np.maximum.reduceat`.

Cached in OUT/index/ (`embeddings.npy`, memory-mapped; `rows.npz`: clip ids, first row of
each clip, face times; `state.json`) and rebuilt when the store's `videos` files changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
        with atomic_path(directory / "rows.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, clips=np.asarray(self.clips, str), starts=self.starts, time_s=self.time_s)

    @classmethod
    def load_saved(cls, directory: Path) -> "FaceIndex":
        with np.load(directory / "rows.npz", allow_pickle=False) as rows:
            clips, starts, time_s = rows["clips"].tolist(), rows["starts"], rows["time_s"]
        return cls(np.load(directory / "embeddings.npy", mmap_mode="r"), clips, starts, time_s)


def _videos_key(out: Path) -> list[list]:
    """The store's `videos` files (name, size, mtime): a video's file is replaced whenever
    it is processed again, so the index is current while these are unchanged."""
    files = sorted(p for p in (out / "videos").glob("[!.]*.parquet"))
    return [[p.name, st.st_size, st.st_mtime_ns] for p in files for st in [p.stat()]]


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
