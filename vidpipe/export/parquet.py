"""The dataset as Parquet: `clips.parquet` (one row per clip: store clip id, video, times,
identity, identity_id, split, name, where the label came from) and, for each modality table
of the store (faces, heads, bodies, audio when present), its rows of those clips with the
clip's `split` beside them. Features stay as the store has them (float32, normalised)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidpipe.export.dataset import Dataset
from vidpipe.export.iqiyi import TABLES
from vidpipe.store import read_arrow, table_files


def write_parquet(data: Dataset, out: str | Path, root: str | Path) -> list[Path]:
    out, root = Path(out), Path(root)
    clips = pa.Table.from_pandas(data.clips, preserve_index=False)
    written = [root / "clips.parquet"]
    pq.write_table(clips, written[0])
    split_of = dict(zip(data.clips.clip_id, data.clips.split))
    for table in TABLES.values():
        if not table_files(out, table):
            continue
        rows = read_arrow(out, table, filter=pc.field("clip_id").isin(list(split_of)))
        rows = rows.append_column("split", pa.array([split_of[c] for c in rows["clip_id"].to_pylist()], pa.string()))
        written.append(root / f"{table}.parquet")
        pq.write_table(rows, written[-1])
    return written
