"""The iQIYI-VID-2019 release as a vidpipe feature store, converted once.

The release is a set of Python-2 pickles of up to millions of frame rows each. Loading one
with ``pickle.load`` costs several KB per face row, so the whole release would not fit in
24 GB. Instead each split is streamed once, video by video, through the restricted
unpickler (:func:`vidpipe.eval.iqiyi_io.stream_modality_pickle`) into Parquet tables laid out
like a ``vidpipe run`` store (``clips``, ``faces``, ``heads``, ``bodies``, ``audio``, with
float16 embeddings as released), which training and prediction then read in streamed batches.

The store of ``ROOT`` split ``S`` lives in ``ROOT/vidpipe_store/S`` when ``ROOT`` is writable,
else in the user cache; ``manifest.json`` records the source files (name, size, mtime), and a
store whose sources changed is converted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidpipe.eval import iqiyi_io
from vidpipe.models.data import MODALITIES, STORE_TABLES, DataError

FORMAT = "vidpipe-iqiyi-store/1"
_ROW_GROUP = 16_384  # rows per Parquet row group, and the most the writer buffers


class _TableWriter:
    """Buffers rows of one table and writes them as Parquet row groups."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer, self.parts, self.rows = path, None, [], 0

    def add(self, columns: dict[str, pa.Array]) -> None:
        self.parts.append(pa.record_batch(columns))
        self.rows += len(next(iter(columns.values())))
        if self.rows >= _ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        table = pa.Table.from_batches(self.parts)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table, row_group_size=_ROW_GROUP)
        self.parts, self.rows = [], 0

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _rows(clip: str, modality: str, v: iqiyi_io.VideoFeatures) -> dict[str, pa.Array]:
    n, dim = v.feats.shape
    emb = pa.FixedSizeListArray.from_arrays(pa.array(v.feats.reshape(-1).astype(np.float16)), dim)
    cols = {"clip_id": pa.array([clip] * n, pa.string())}
    if modality != "audio":
        cols["frame_index"] = pa.array(v.frames, pa.int32())
    if modality == "face":
        cols["quality"] = pa.array(v.quality, pa.float32())
        cols["rank"] = pa.array(np.arange(n, dtype=np.int32))  # frames come best first
    elif modality == "head":
        cols["det_score"] = pa.array(v.quality, pa.float32())
    cols["embedding"] = emb
    return cols


def _sources(root: Path, split: str, modalities: Sequence[str]) -> dict[str, Path]:
    found = {}
    for m in modalities:
        path = iqiyi_io.modality_file(root, m, split)
        if path is not None:
            found[m] = path
        elif m == "face":
            names = " or ".join(p.name for p in iqiyi_io.modality_files(root, m, split))
            raise DataError(f"{root}: no {names} (an iQIYI-VID-2019 directory holds it)")
    return found


def _fingerprint(sources: dict[str, Path]) -> dict[str, list]:
    return {m: [p.name, p.stat().st_size, p.stat().st_mtime_ns] for m, p in sorted(sources.items())}


def _convert_file(path: Path, modality: str, table: Path, clips: set[str], progress: bool, level: int) -> None:
    """One release pickle → one Parquet table (``level``: what the streaming reader forgets)."""
    from tqdm.auto import tqdm

    writer = _TableWriter(table / "part-0.parquet")
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=not progress, leave=False)

    def on_video(clip: str, v: iqiyi_io.VideoFeatures) -> None:
        clips.add(clip)
        if len(v.feats):
            writer.add(_rows(clip, modality, v))

    try:
        iqiyi_io.stream_modality_pickle(path, modality, on_video, lambda n: bar.update(n - bar.n), level)
    finally:
        writer.close()
        bar.close()


def convert_split(sources: dict[str, Path], out: Path, progress: bool = False,
                  log: Callable[[str], None] | None = None) -> Path:
    """Stream the given release pickles ({modality: path}) into a store at ``out``, atomically."""
    log = log or (lambda s: None)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    clips: set[str] = set()
    try:
        for m, path in sources.items():
            log(f"converting {path} ({path.stat().st_size / 1e6:.0f} MB) into {out / STORE_TABLES[m]}")
            for level in iqiyi_io.FORGET_LEVELS:  # forget less only for a pickle that refers back
                try:
                    _convert_file(path, m, tmp / STORE_TABLES[m], clips, progress, level)
                    break
                except iqiyi_io.PickleBackReference:
                    log(f"{path.name} refers back to earlier videos; converting again, keeping more in memory")
        names = sorted(clips)
        pq.write_table(pa.table({"clip_id": pa.array(names, pa.string()), "status": pa.array(["ok"] * len(names))}),
                       _mkdir(tmp / "clips") / "part-0.parquet")
        (tmp / "manifest.json").write_text(json.dumps({"format": FORMAT, "sources": _fingerprint(sources)}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_cache(root: Path) -> Path:
    """``ROOT/vidpipe_store`` when ``ROOT`` is writable, else a folder in the user cache."""
    if os.access(root, os.W_OK):
        return root / "vidpipe_store"
    from platformdirs import user_cache_dir

    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(user_cache_dir("vidpipe")) / "iqiyi" / digest


def iqiyi_store(root: str | Path, split: str, modalities: Sequence[str] | None = None,
                cache: str | Path | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None) -> Path:
    """The converted store of one split (every modality the directory holds), converting it
    first when missing or stale. Logs which release files it stands for."""
    root = Path(root)
    log = log or (lambda s: None)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    sources = _sources(root, split, MODALITIES)
    for m in modalities or ():
        if m not in sources:
            raise DataError(f"{root}: no {iqiyi_io.modality_files(root, m, split)[0].name}")
    out = Path(cache or default_cache(root)) / split
    manifest = out / "manifest.json"
    fresh = manifest.is_file() and json.loads(manifest.read_text()).get("sources") == _fingerprint(sources)
    if not fresh:
        convert_split(sources, out, progress, log)
    log(f"{split}: {', '.join(p.name for p in sources.values())} (as the store {out})")
    return out
