"""`OUT/identities/`: who is in which clip, from every route, in one schema.

Each route writes its own Parquet file into `OUT/identities/`: `vidpipe tag` writes
`tags.parquet` (sources `gallery` and `propagated`), the fusion model's `vidpipe predict`
writes `predictions.parquet` (source `model`), a review writes `review`. Every file has
IDENTITY_SCHEMA's columns, or at least clip_id, identity and score (a missing `source` is
taken from the file name: `predictions` -> `model`). `read_identities` merges them all;
`resolve` keeps, for each clip, the rows of its most trusted source (a review of one
person of a library clip decides that person only).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vidpipe.identities.match import UNKNOWN
from vidpipe.util import atomic_path

IDENTITY_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("identity", pa.string()),  # a gallery name, 'unknown', or the model's class ('0' = noise)
    ("score", pa.float32()),  # cosine to the person's template (gallery), vote share x body cosine (propagated), probability (model)
    ("source", pa.string()),  # 'gallery' | 'propagated' | 'model' | 'review'
    ("track", pa.int32()),  # library mode: the person's face track within the clip; null for clip-level rows
    ("start_s", pa.float64()),  # when the person is seen (presentation timeline); null: the whole clip
    ("end_s", pa.float64()),
])
SOURCES = ("review", "gallery", "model", "propagated")  # most trusted first
NOISE = "0"  # the fusion model's distractor class
DIRECTORY = "identities"
_SOURCE_BY_FILE = {"predictions": "model", "tags": "gallery", "review": "review", "reviews": "review"}


def identities_dir(out: str | Path) -> Path:
    return Path(out) / DIRECTORY


def write_identities(out: str | Path, name: str, rows: pd.DataFrame | pa.Table) -> Path:
    """Write one route's rows as OUT/identities/<name>.parquet, atomically."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, schema=IDENTITY_SCHEMA, preserve_index=False)
    target = identities_dir(out) / f"{name}.parquet"
    with atomic_path(target) as tmp:
        pq.write_table(table.cast(IDENTITY_SCHEMA), tmp)
    return target


def read_identities(out: str | Path) -> pd.DataFrame:
    """Every row of every file in OUT/identities/, in IDENTITY_SCHEMA (empty when none)."""
    frames = []
    for path in sorted(identities_dir(out).glob("[!._]*.parquet")):
        table = pq.read_table(path)
        df = table.to_pandas()
        if "source" not in df:
            df["source"] = _SOURCE_BY_FILE.get(path.stem, path.stem)
        for field in IDENTITY_SCHEMA:
            if field.name not in df:
                df[field.name] = None
        frames.append(df[IDENTITY_SCHEMA.names])
    if not frames:
        return IDENTITY_SCHEMA.empty_table().to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    merged = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    table = pa.Table.from_pandas(merged, schema=IDENTITY_SCHEMA, preserve_index=False)
    return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)  # track stays an integer


def resolve(rows: pd.DataFrame) -> pd.DataFrame:
    """Named people only (no 'unknown', no model noise), and for each clip only the rows of
    its most trusted source (review > gallery > model > propagated). A clip-level review
    (no track) that names nobody (a rejected tag, a distractor) still overrules the other
    routes' names. A review of one person of a clip (its row carries that person's track,
    library mode) decides that person only: it replaces the other routes' row of the same
    track, and every other person of the clip keeps their row."""
    if "track" not in rows:
        rows = rows.assign(track=None)
    review = rows.source == "review"
    clip_level = review & rows.track.isna()
    person_level = review & rows.track.notna()
    vetoed = set(rows.clip_id[clip_level]) - set(rows.clip_id[clip_level & ~rows.identity.isin([UNKNOWN, NOISE])])
    decided = set(zip(rows.clip_id[person_level], rows.track[person_level].astype(int)))
    overruled = ~review & rows.track.notna() & pd.Series(
        [(c, t) in decided for c, t in zip(rows.clip_id, rows.track.fillna(-1).astype(int))], index=rows.index, dtype=bool)
    named = rows[~rows.identity.isin([UNKNOWN, NOISE]) & rows.identity.notna() & ~rows.clip_id.isin(vetoed)
                 & ~overruled].copy()
    rank = {s: i for i, s in enumerate(SOURCES)}
    named["_rank"] = named.source.map(lambda s: rank.get(s, len(SOURCES)))
    person = (named.source == "review") & named.track.notna()  # ranks with the people it sits beside
    others = named[named.source != "review"].groupby("clip_id")["_rank"].min()
    named.loc[person, "_rank"] = named.clip_id[person].map(others).fillna(0).astype(int)
    best = named.groupby("clip_id")["_rank"].transform("min")
    return named[named._rank == best].drop(columns="_rank").reset_index(drop=True)
