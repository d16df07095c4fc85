"""The feature store: one Parquet dataset directory per table, one file per video.

Readable without vidpipe (pandas, polars, pyarrow.dataset, DuckDB). The store owns writing
and reading; the tables' schemas come from the core (`videos`, `paths`, `clips`) and from
the stages, which register theirs. A video's files are written to hidden temporary names
and renamed into place when the whole video is done, the `videos` file last, so a killed
run never leaves half a video visible and resuming only has to look at `videos/`. Readers
skip names starting with '.' (pyarrow's default). A lock per video keeps two `vidpipe run`
processes on one store from doing the same video twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vidpipe.util import atomic_path, atomic_write_text, first_line

log = logging.getLogger("vidpipe")


class StoreError(ValueError):
    """A store file that cannot be read (one line naming it)."""

VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()),  # sha256 of the file's bytes, first 16 hex digits (unreadable: sha1 of its path)
    ("path", pa.string()),  # the first path it was found at (every path: the `paths` table)
    ("size_bytes", pa.int64()),
    ("duration_s", pa.float64()),  # of the video stream
    ("fps", pa.float64()),  # average; frames are timed by their timestamps
    ("width", pa.int32()),  # as displayed (rotation applied)
    ("height", pa.int32()),
    ("rotation", pa.int32()),  # degrees clockwise applied to show frames upright
    ("has_audio", pa.bool_()),
    ("codec", pa.string()),
    ("start_time_s", pa.float64()),  # the container's start: time 0 of the presentation timeline
    ("video_start_s", pa.float64()),  # first video frame on the presentation timeline
    ("audio_start_s", pa.float64()),  # first audio sample on it; null without audio
    ("status", pa.string()),  # 'ok' | 'error'
    ("error", pa.string()),  # one line, null when ok
    ("warning", pa.string()),  # e.g. decoding stopped early; null when none
    ("n_clips", pa.int32()),
    ("n_clips_kept", pa.int32()),
    ("stages", pa.list_(pa.string())),  # the stages run on its kept clips
    ("timings", pa.map_(pa.string(), pa.float64())),  # wall s per part (decode, shots, each stage, write) + model s
    ("config_hash", pa.string()),  # analysis config + backends + weights: what decides resume
    ("vidpipe_version", pa.string()),
])

PATHS_SCHEMA = pa.schema([
    ("path", pa.string()),  # absolute path of an input file
    ("video_id", pa.string()),  # its content id: several paths may share one video
    ("size_bytes", pa.int64()),
    ("mtime", pa.float64()),
])

CLIPS_SCHEMA = pa.schema([
    ("clip_id", pa.string()),  # '<video_id>-<shot_index:04d>'
    ("video_id", pa.string()),
    ("shot_index", pa.int32()),
    ("start_s", pa.float64()),  # presentation timeline (what `ffmpeg -ss` and players use)
    ("end_s", pa.float64()),
    ("duration_s", pa.float64()),
    ("status", pa.string()),  # 'ok' (kept) | 'rejected'
    ("reason", pa.string()),  # why rejected; null when kept
    ("n_frames_sampled", pa.int32()),
])

CORE_TABLES = ("videos", "paths", "clips")


def table_schemas(stages: Iterable[Any]) -> dict[str, pa.Schema]:
    """The per-video tables the given stage classes write, `clips` widened by their clip
    columns. `videos` comes last: it is published last (it marks a video done)."""
    stages = list(stages)
    clips = CLIPS_SCHEMA
    for stage in stages:
        for f in stage.clip_columns:
            clips = clips.append(f)
    schemas = {"clips": clips}
    for stage in stages:
        for name, schema in stage.tables.items():
            if name in schemas or name == "videos":
                raise ValueError(f"table {name!r} of stage {stage.name!r} is already taken")
            schemas[name] = schema
    schemas["videos"] = VIDEOS_SCHEMA
    return schemas


def known_schemas() -> dict[str, pa.Schema]:
    """Tables of every registered stage (for reading a store made by any configuration)."""
    from vidpipe.pipeline.stage import stage_classes

    return {"paths": PATHS_SCHEMA, **table_schemas(stage_classes().values())}


def table_dir(out: Path, table: str) -> Path:
    return Path(out) / table


def final_path(out: Path, table: str, video_id: str) -> Path:
    return table_dir(out, table) / f"{video_id}.parquet"


def to_arrow(columns: dict[str, Any] | list[dict[str, Any]] | pa.Table, schema: pa.Schema) -> pa.Table:
    """Rows (a dict of columns, a list of row dicts, or an Arrow table) as a table of `schema`."""
    if isinstance(columns, pa.Table):
        return columns.select(schema.names).cast(schema)
    if isinstance(columns, list):
        return pa.Table.from_pylist(columns, schema=schema)
    missing = [f.name for f in schema if f.name not in columns]
    if missing:
        raise ValueError(f"rows lack column(s) {', '.join(missing)}")
    n = len(next(iter(columns.values()))) if columns else 0
    return pa.table({f.name: pa.array(list(columns[f.name]) if n else [], f.type) for f in schema}, schema=schema)


class VideoWriter:
    """Collects one video's rows for every table and publishes them atomically on commit.

    Rows go to hidden temporary files as they come (memory stays flat in video length);
    `commit` renames them into place with the `videos` file last, and removes this video's
    files from tables this configuration no longer writes; `abort` removes the temporaries.
    """

    def __init__(self, out: Path, video_id: str, schemas: dict[str, pa.Schema], flush_rows: int = 4096):
        self.out = Path(out)
        self.video_id = video_id
        self.schemas = schemas
        self.flush_rows = flush_rows
        self.rows: dict[str, int] = {t: 0 for t in schemas}
        self._buffers: dict[str, list[pa.Table]] = {t: [] for t in schemas}
        self._buffered: dict[str, int] = {t: 0 for t in schemas}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._tmp = {t: table_dir(out, t) / f".{video_id}.parquet.{os.getpid()}.tmp" for t in schemas}

    def add(self, table: str, rows: dict[str, Any] | list[dict[str, Any]] | pa.Table) -> None:
        if table not in self.schemas:
            raise ValueError(f"unknown table {table!r}; tables: {', '.join(self.schemas)}")
        t = to_arrow(rows, self.schemas[table])
        self._buffers[table].append(t)
        self._buffered[table] += len(t)
        self.rows[table] += len(t)
        if self._buffered[table] >= self.flush_rows:
            self._flush(table)

    def _flush(self, table: str) -> None:
        if table not in self._writers:
            self._tmp[table].parent.mkdir(parents=True, exist_ok=True)
            self._writers[table] = pq.ParquetWriter(self._tmp[table], self.schemas[table])
        for t in self._buffers[table]:
            if len(t):
                self._writers[table].write_table(t)
        self._buffers[table], self._buffered[table] = [], 0

    def commit(self) -> None:
        for table in self.schemas:
            self._flush(table)  # every table gets a file, empty or not: it replaces older ones
            self._writers.pop(table).close()
            with open(self._tmp[table], "rb") as f:
                os.fsync(f.fileno())
        for table in tables(self.out):  # on disk: a stage switched off or removed since loses its rows of this video
            if table not in self.schemas:
                final_path(self.out, table, self.video_id).unlink(missing_ok=True)
        for table in self.schemas:  # dict order: `videos` last
            os.replace(self._tmp[table], final_path(self.out, table, self.video_id))

    def abort(self) -> None:
        """Drop everything written so far for this video."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._buffers = {t: [] for t in self.schemas}
        self.rows = {t: 0 for t in self.schemas}
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


# ---------------------------------------------------------------- locks and recovery

class VideoLock:
    """An exclusive lock on one video of a store (fcntl: released when the process dies)."""

    def __init__(self, out: Path, video_id: str) -> None:
        self.path = Path(out) / ".locks" / f"{video_id}.lock"
        self._fd: int | None = None

    def acquire(self, wait: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "VideoLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temporaries(out: Path) -> None:
    """Temporaries of a killed run are never renamed into place; sweep those whose video
    no running process holds (another `vidpipe run` may be writing the rest)."""
    per_video = [t for t in known_schemas() if t != "paths"]  # other folders' temporaries belong to other writers
    for tmp in (t for table in per_video for t in table_dir(out, table).glob(".*.parquet.*.tmp")):
        video_id = tmp.name[1:].split(".parquet.")[0]
        lock = VideoLock(out, video_id)
        if lock.acquire(wait=False):
            try:
                tmp.unlink(missing_ok=True)
            finally:
                lock.release()


@dataclass
class FinishedVideo:
    config_hash: str
    status: str
    error: str | None


def finished(out: Path, video_id: str, tables: Iterable[str] = ()) -> FinishedVideo | None:
    """How a video was finished before (config hash, status), or None when it was not, or
    when its file of any of `tables` cannot be read (then it must be redone)."""
    path = final_path(out, "videos", video_id)
    if not path.exists():
        return None
    try:
        row = pq.read_table(path, columns=["config_hash", "status", "error"]).to_pylist()[0]
    except (pa.ArrowException, OSError, IndexError, KeyError):
        return None  # unreadable: redo it
    for table in tables:
        if (problem := unreadable(final_path(out, table, video_id))) is not None:
            log.warning("%s; its video is redone", problem)
            return None
    return FinishedVideo(row["config_hash"], row["status"], row["error"])


def written_since(out: Path, video_id: str, since: float) -> bool:
    """Whether the video's `videos` row (written last, when it is finished) is from `since`
    (a `time.time()`) or later."""
    try:
        return final_path(out, "videos", video_id).stat().st_mtime >= since
    except OSError:
        return False


def unreadable(path: Path) -> str | None:
    """Why the Parquet file at `path` cannot be read, naming it (its footer is read, not its
    data); None when it can, or is not there."""
    try:
        pq.read_metadata(path)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as e:
        return f"unreadable store file {path}: {first_line(e)}"
    return None


def _store_error(files: Iterable[Path], e: Exception) -> StoreError:
    """The one-line error for a failed read of `files`: the first of them that is unreadable."""
    problem = next((p for p in map(unreadable, files) if p is not None), None)
    return StoreError(problem or f"cannot read the store: {first_line(e)}")


def path_id(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def record_error(out: Path, path: Path, error: str, config_hash: str | None = None,
                 video_id: str | None = None) -> str:
    """The `videos` row (status 'error') of an input that failed outside the worker that
    writes rows: one that could not even be read has no content id, so the row is keyed by
    a hash of its path. Returns the key."""
    from vidpipe._version import __version__

    p = Path(path).absolute()
    video_id = video_id or path_id(str(p))
    row = {"video_id": video_id, "path": str(p), "status": "error", "error": error, "config_hash": config_hash,
           "vidpipe_version": __version__}
    with atomic_path(final_path(out, "videos", video_id)) as tmp:
        pq.write_table(to_arrow([row], VIDEOS_SCHEMA), tmp)
    return video_id


def forget_unreadable(out: Path, path: Path) -> None:
    """`path` can be read now: its row from a run that could not read it goes."""
    final_path(out, "videos", path_id(str(Path(path).absolute()))).unlink(missing_ok=True)


def record_path(out: Path, path: Path, video_id: str) -> None:
    """Remember that `path` holds video `video_id` (one small file per path, replaced when
    the file at that path changes)."""
    p = Path(path).absolute()
    st = p.stat()
    target = table_dir(out, "paths") / f"{path_id(str(p))}.parquet"
    row = {"path": str(p), "video_id": video_id, "size_bytes": st.st_size, "mtime": st.st_mtime}
    try:
        if pq.read_table(target).to_pylist() == [row]:
            return  # already known: a resumed run rewrites nothing
    except (OSError, pa.ArrowInvalid):
        pass
    table = to_arrow([row], PATHS_SCHEMA)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


# ---------------------------------------------------------------- reading

def table_files(out: str | Path, table: str) -> list[Path]:
    directory = table_dir(Path(out), table)
    return sorted(directory.glob("[!.]*.parquet")) if directory.is_dir() else []


def dataset(out: str | Path, table: str) -> ds.Dataset:
    """A pyarrow dataset of one table (the registered schema, or the files' own for a table
    of a stage this process does not know)."""
    schema = known_schemas().get(table)
    files = table_files(out, table)
    if schema is None and not files:
        raise ValueError(f"no table {table!r} in {out}; tables: {', '.join(tables(out)) or 'none'}")
    if not files:
        return ds.dataset(schema.empty_table())
    try:
        return ds.dataset(files, format="parquet", schema=schema)
    except (pa.ArrowException, OSError) as e:
        raise _store_error(files, e) from None


def read_arrow(out: str | Path, table: str, columns: list[str] | None = None,
               filter: Any = None) -> pa.Table:
    """One table as Arrow (only `columns`, only rows matching the `filter` expression);
    StoreError naming the file that cannot be read."""
    d = dataset(out, table)
    if columns is not None:
        missing = [c for c in columns if c not in d.schema.names]
        if missing:
            raise ValueError(f"table {table!r} has no column(s) {', '.join(missing)}")
    try:
        return d.to_table(columns=columns, filter=filter)
    except (pa.ArrowException, OSError) as e:
        raise _store_error(table_files(out, table), e) from None


def read_table(out: str | Path, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One table of a feature store as a pandas DataFrame (empty with the right columns
    when nothing was written yet)."""
    return read_arrow(out, table, columns).to_pandas()


def iter_batches(out: str | Path, table: str, columns: list[str] | None = None,
                 batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
    """A table in bounded memory, batch by batch; the columns a file lacks are left out of
    its batches. One file at a time through an 8 MB buffered stream, without pre-buffering
    or decoding threads: reading a 1 GB embedding column then peaks at about 200 MB above
    the batch itself, where the dataset scanner held ~1.4 GB (issue #8's memory bench)."""
    for path in table_files(out, table):
        try:
            f = pq.ParquetFile(path, pre_buffer=False, buffer_size=8 << 20)
            names = set(f.schema_arrow.names)
            wanted = None if columns is None else [c for c in columns if c in names]
            batches = f.iter_batches(batch_size=batch_size, columns=wanted, use_threads=False)
            while (batch := next(batches, None)) is not None:
                if batch.num_rows:
                    yield batch
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"unreadable store file {path}: {first_line(e)}") from None


def tables(out: str | Path) -> list[str]:
    """The tables present in a store."""
    out = Path(out)
    return sorted(d.name for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")) if out.is_dir() else []


# ---------------------------------------------------------------- manifest

@dataclass
class Manifest:
    """`manifest.json`: what produced the store (version, config, every stage's backends
    and weights with sha256 and licence, the tables and their columns)."""

    vidpipe_version: str
    config: dict[str, Any]
    stages: dict[str, dict[str, Any]]  # stage -> {key: {task, name, weights: [...]}}
    config_hash: str
    tables: dict[str, list[str]] = field(default_factory=dict)

    def write(self, out: Path) -> None:
        atomic_write_text(Path(out) / "manifest.json", json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, out: Path) -> "Manifest":
        data = json.loads((Path(out) / "manifest.json").read_text())
        known = {"vidpipe_version", "config", "stages", "config_hash", "tables"}
        return cls(**{k: v for k, v in data.items() if k in known})
