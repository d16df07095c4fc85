"""The feature store: one Parquet dataset directory per table, one file per video.

Readable without vidpipe (pandas, polars, pyarrow.dataset, DuckDB). A video's files are
written to hidden temporary names and renamed into place when the whole video is done, the
`videos` file last, so a killed run never leaves half a video visible and resuming only has
to look at `videos/`. Readers skip names starting with '.' (pyarrow's default).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

F32_LIST = pa.list_(pa.float32())

# Every table, every column, with what it means (the README's store section mirrors this).
SCHEMAS: dict[str, pa.Schema] = {
    "videos": pa.schema(
        [
            ("video_id", pa.string()),  # sha256 of the file's bytes, first 16 hex digits
            ("path", pa.string()),  # as given on the command line (resolved)
            ("size_bytes", pa.int64()),
            ("duration_s", pa.float64()),
            ("fps", pa.float64()),  # average; frames are timed by their timestamps
            ("width", pa.int32()),  # as displayed (rotation applied)
            ("height", pa.int32()),
            ("rotation", pa.int32()),  # degrees clockwise applied to show frames upright
            ("has_audio", pa.bool_()),
            ("codec", pa.string()),
            ("status", pa.string()),  # 'ok' | 'error'
            ("error", pa.string()),  # one line, null when ok
            ("warning", pa.string()),  # e.g. decoding stopped early; null when none
            ("n_clips", pa.int32()),
            ("n_clips_kept", pa.int32()),
            ("n_faces", pa.int32()),
            ("face_backend", pa.string()),
            ("config_hash", pa.string()),  # analysis config + backend + weights: what decides resume
            ("vidpipe_version", pa.string()),
        ]
    ),
    "clips": pa.schema(
        [
            ("clip_id", pa.string()),  # '<video_id>-<shot_index:04d>'
            ("video_id", pa.string()),
            ("shot_index", pa.int32()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("duration_s", pa.float64()),
            ("status", pa.string()),  # 'ok' | 'rejected'
            ("reason", pa.string()),  # why rejected; null when ok
            ("n_frames_sampled", pa.int32()),
            ("n_faces", pa.int32()),
        ]
    ),
    "faces": pa.schema(
        [
            ("clip_id", pa.string()),
            ("video_id", pa.string()),
            ("frame_index", pa.int32()),  # frame number in decode order
            ("time_s", pa.float64()),
            ("bbox", F32_LIST),  # x1, y1, x2, y2 in source (displayed) pixels
            ("landmarks", F32_LIST),  # 5 points x, y: eyes, nose, mouth corners
            ("det_score", pa.float32()),
            ("quality", pa.float32()),  # L2 norm of the raw embedding
            ("embedding", F32_LIST),  # L2-normalised
            ("rank", pa.int32()),  # by quality within the clip, 0 = best
            ("selected", pa.bool_()),  # rank < faces.top_k (32): the papers' top faces
        ]
    ),
}

TABLES = tuple(SCHEMAS)
# The `videos` file marks a video done, so it is published after every other table.
COMMIT_ORDER = tuple(t for t in TABLES if t != "videos") + ("videos",)

def table_dir(out: Path, table: str) -> Path:
    return Path(out) / table

def final_path(out: Path, table: str, video_id: str) -> Path:
    return table_dir(out, table) / f"{video_id}.parquet"

class VideoWriter:
    """Collects one video's rows for every table and publishes them atomically on commit.

    Rows go to hidden temporary files as they come (memory stays flat in video length);
    `commit` renames them into place with the `videos` row last; `abort` removes them.
    """

    def __init__(self, out: Path, video_id: str, flush_rows: int = 4096):
        self.out = Path(out)
        self.video_id = video_id
        self.flush_rows = flush_rows
        self._buffers: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._tmp = {t: table_dir(out, t) / f".{video_id}.parquet.{os.getpid()}.tmp" for t in TABLES}

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        self._buffers[table].extend(rows)
        if len(self._buffers[table]) >= self.flush_rows:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self._buffers[table]
        if table not in self._writers:
            self._tmp[table].parent.mkdir(parents=True, exist_ok=True)
            self._writers[table] = pq.ParquetWriter(self._tmp[table], SCHEMAS[table])
        if rows:
            self._writers[table].write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[table]))
        self._buffers[table] = []

    def commit(self) -> None:
        for table in TABLES:
            self._flush(table)  # every table gets a file, empty or not: it replaces older ones
            self._writers.pop(table).close()
            with open(self._tmp[table], "rb") as f:
                os.fsync(f.fileno())
        for table in COMMIT_ORDER:
            os.replace(self._tmp[table], final_path(self.out, table, self.video_id))

    def abort(self) -> None:
        """Drop everything written so far for this video."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._buffers = {t: [] for t in TABLES}
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

def remove_stale_temporaries(out: Path) -> None:
    """Temporary files of a killed run are never renamed into place; sweep them."""
    for table in TABLES:
        for tmp in table_dir(out, table).glob(".*.parquet.*.tmp"):
            tmp.unlink(missing_ok=True)

@dataclass
class FinishedVideo:
    config_hash: str
    status: str
    error: str | None

def finished(out: Path, video_id: str) -> FinishedVideo | None:
    """How a video was finished before (config hash, status), or None when it was not."""
    path = final_path(out, "videos", video_id)
    if not path.exists():
        return None
    try:
        row = pq.read_table(path, columns=["config_hash", "status", "error"]).to_pylist()[0]
    except (pa.ArrowInvalid, OSError, IndexError):
        return None  # unreadable: redo it
    return FinishedVideo(row["config_hash"], row["status"], row["error"])

def read_table(out: str | Path, table: str) -> pd.DataFrame:
    """One table of a feature store as a pandas DataFrame (empty with the right columns
    when nothing was written yet)."""
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    directory = table_dir(Path(out), table)
    files = sorted(directory.glob("[!.]*.parquet")) if directory.is_dir() else []
    if not files:
        return SCHEMAS[table].empty_table().to_pandas()
    return ds.dataset(files, format="parquet", schema=SCHEMAS[table]).to_table().to_pandas()

@dataclass
class Manifest:
    """`manifest.json`: what produced the store (version, config, backend, weights)."""

    vidpipe_version: str
    config: dict[str, Any]
    face_backend: str
    embedding_dim: int
    weights: list[dict[str, str]]  # [{name, file, sha256}]
    config_hash: str

    def write(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".manifest.json.tmp"
        data = dict(self.__dict__, tables={t: [f.name for f in SCHEMAS[t]] for t in TABLES})
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out / "manifest.json")
