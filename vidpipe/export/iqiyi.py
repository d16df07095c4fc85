"""The iQIYI-VID-2019 release layout, so that the challenge's research code reads an
exported dataset unchanged.

Per split (train, val, test), one Python-2 pickle per modality, a dict keyed by the clip's
name (bytes, no `.mp4`):
- `face_{split}_v2.pickle`: per clip a list of `[frame_str, bbox, det_score, quality_score,
  feat]`, one per face of the major character, in frame order; frame_str is the frame
  number inside the clip (bytes), bbox `[x1, y1, x2, y2]` with 0 <= x1 <= x2, 0 <= y1 <= y2,
  scores Python floats, feat the raw float16 embedding (the normalised embedding times its
  quality: the release's features carry quality as their L2 norm). Every clip of the split
  has an entry, an empty list when no face was seen.
- `head_{split}.pickle`: `[frame_str, bbox, det_score, feat]`; `body_{split}.pickle`:
  `[frame_str, bbox, feat]`; `audio_{split}.pickle`: one float16 vector per clip. A clip
  without that modality has no entry; a store without the table gives no file.
- `train_gt.txt`: `NAME.mp4 ID` per line; `val_gt.txt` (and `test_gt.txt`, which the
  challenge kept secret): `ID NAME.mp4 NAME.mp4 …` per identity. Distractors are in no gt
  file (label 0 by the release's convention). IDs are integers, as the research code's
  `int(label)` wants; `identities.csv` names them, `clips.csv` ties names to store clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from vidpipe.eval import iqiyi_io
from vidpipe.export.dataset import SPLITS, Dataset
from vidpipe.store import dataset, read_arrow, read_table, table_files

TABLES = {"face": "faces", "head": "heads", "body": "bodies", "audio": "audio"}
COLUMNS = {"face": ["clip_id", "time_s", "bbox", "det_score", "quality", "embedding", "major"],
           "head": ["clip_id", "time_s", "bbox", "det_score", "embedding"],
           "body": ["clip_id", "time_s", "bbox", "det_score", "embedding"],
           "audio": ["clip_id", "embedding"]}


def face_file(split: str) -> str:
    return f"face_{split}_v2.pickle"


def modality_file(modality: str, split: str) -> str:
    return face_file(split) if modality == "face" else f"{modality}_{split}.pickle"


def store_rows(out: Path, table: str, columns: list[str], clip_ids: list[str]) -> pd.DataFrame | None:
    """The rows of `table` for these clips (only the columns the table has); None without the table."""
    if not table_files(out, table):
        return None
    names = dataset(out, table).schema.names
    return read_arrow(out, table, [c for c in columns if c in names], filter=pc.field("clip_id").isin(clip_ids)).to_pandas()


def _entries(modality: str, rows: pd.DataFrame, clips: pd.DataFrame, fps: dict[str, float]) -> dict[str, object]:
    """Clip name -> its entry, for the clips that have rows."""
    if modality == "audio":
        rows = rows[rows.embedding.notna()].drop_duplicates("clip_id")
        names = dict(zip(clips.clip_id, clips["name"]))
        return {names[c]: np.asarray(e, np.float16) for c, e in zip(rows.clip_id, rows.embedding)}
    if modality == "face" and "major" in rows:
        rows = rows[rows.major.fillna(True).astype(bool)]
    info = clips.set_index("clip_id")
    frame = np.round((rows.time_s.to_numpy() - info.start_s.reindex(rows.clip_id).to_numpy())
                     * info.video_id.reindex(rows.clip_id).map(fps).to_numpy())
    rows = rows.assign(frame_no=np.maximum(frame, 0).astype(np.int64)).sort_values(["clip_id", "frame_no"], kind="stable")
    out: dict[str, list] = {}
    for row in rows.itertuples(index=False):
        x1, y1, x2, y2 = (max(0.0, float(v)) for v in row.bbox)
        bbox = np.array([x1, y1, max(x1, x2), max(y1, y2)], np.float32)
        emb = np.asarray(row.embedding, np.float32)
        head = [b"%d" % row.frame_no, bbox]
        if modality == "face":
            entry = [*head, float(row.det_score), float(row.quality), (emb * row.quality).astype(np.float16)]
        elif modality == "head":
            entry = [*head, float(row.det_score), emb.astype(np.float16)]
        else:
            entry = [*head, emb.astype(np.float16)]
        out.setdefault(info.at[row.clip_id, "name"], []).append(entry)
    return out


def write_iqiyi(data: Dataset, out: str | Path, root: str | Path) -> list[Path]:
    """Write the release files of `data` (clips of store `out`) into folder `root`."""
    out, root = Path(out), Path(root)
    clips = data.clips
    videos = read_table(out, "videos", ["video_id", "fps"])
    fps = {v: (f if f and f > 0 else 25.0) for v, f in zip(videos.video_id, videos.fps)}
    written = []
    for modality, table in TABLES.items():
        rows = store_rows(out, table, COLUMNS[modality], clips.clip_id.tolist())
        if rows is None and modality != "face":
            continue
        entries = _entries(modality, rows, clips, fps) if rows is not None else {}
        for split in SPLITS:
            names = clips["name"][clips.split == split]
            pickle = {n.encode(): entries[n] for n in names if n in entries}
            if modality == "face":  # every clip of the split, as the release
                pickle = {n.encode(): entries.get(n, []) for n in names}
            path = root / modality_file(modality, split)
            iqiyi_io.write_py2_pickle(path, pickle)
            written.append(path)
    train = clips[clips.split == "train"]
    iqiyi_io.write_train_gt(root / "train_gt.txt", dict(zip(train["name"], train.identity_id.astype(str))))
    for split in ("val", "test"):
        part = clips[(clips.split == split) & (clips.identity_id > 0)].sort_values(["identity_id", "name"])
        lists = {str(i): g["name"].tolist() for i, g in part.groupby("identity_id", sort=True)}
        iqiyi_io.write_id_lists(root / f"{split}_gt.txt", lists)
    written += [root / "train_gt.txt", root / "val_gt.txt", root / "test_gt.txt"]
    return written
