"""Export: a reviewed store as a dataset others can train on.

    import vidpipe
    result = vidpipe.export_dataset("features/", "gallery.db", "dataset/")   # iQIYI-VID-2019 files
    result.dataset.clips                                                     # one row per clip

Only reviewed or confidently tagged clips enter (see `dataset.py`), split 40/30/30 by
identity with a seed, distractors in val and test. The dataset is built in a hidden
folder beside the target and renamed into place when complete, so an interrupted export
leaves no partial dataset; one killed while swapping an old dataset for the new leaves the
old one aside, and the next export puts it back (`recover`) and sweeps the hidden folders.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from vidpipe._version import __version__
from vidpipe.export.dataset import SPLITS, Dataset, assign_splits, labelled_clips
from vidpipe.identities.encoder import IdentitiesError
from vidpipe.identities.gallery import Gallery
from vidpipe.identities.table import NOISE
from vidpipe.review.agreement import agreement
from vidpipe.review.db import ReviewDB, review_db_path
from vidpipe.review.publish import publish
from vidpipe.review.queue import StoreView

FORMATS = ("iqiyi", "parquet")


class ExportError(IdentitiesError):
    """An export that cannot be made (nothing to export, the target exists, bad options)."""


@dataclass
class ExportOptions:
    fmt: str = "iqiyi"  # 'iqiyi' | 'parquet'
    min_score: float | None = 0.6  # unreviewed clips need a proposal this sure; None: reviewed clips only
    min_passes: int = 1  # 2: reviewed clips need two agreeing reviews (or the arbiter's)
    seed: int = 0
    unknown_distractors: bool = True  # unreviewed clips of unknown-people clusters are distractors
    overwrite: bool = False


@dataclass
class ExportResult:
    path: Path
    dataset: Dataset
    files: list[Path]


def export_dataset(out: str | Path, gallery: str | Path, dest: str | Path, options: ExportOptions | None = None,
                   review_db: str | Path | None = None) -> ExportResult:
    """Write the dataset of store `out` (decisions from the review file of `gallery`) to `dest`."""
    options = options or ExportOptions()
    if options.fmt not in FORMATS:
        raise ExportError(f"unknown format {options.fmt!r}; one of {', '.join(FORMATS)}")
    out, dest = Path(out), Path(dest)
    recover(dest)
    if dest.exists() and not options.overwrite:
        raise ExportError(f"{dest} exists: give --overwrite to replace it")
    Gallery.open(gallery).close()  # a clear error when it is missing or not a gallery
    review_path = Path(review_db) if review_db else review_db_path(gallery)
    view = StoreView(out)
    with ReviewDB(review_path) as db:
        decisions = db.decisions()
        publish(out, db, view)  # the identities reader agrees with the dataset
    clips = labelled_clips(view, decisions, options.min_score, options.min_passes, options.unknown_distractors)
    if not (clips.identity != NOISE).any():
        raise ExportError(f"nothing to export from {out}: no clip reviewed in {review_path}"
                          + ("" if options.min_score is None else f" and no proposal scoring at least {options.min_score}"))
    clips = assign_splits(clips, options.seed)
    data = Dataset(clips, sorted(set(clips.identity) - {NOISE}), agreement(decisions), str(out.resolve()), asdict(options))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the dataset from its other users
    try:
        files = _write(data, view, out, tmp, options)
        _swap(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(dest, data, [dest / f.relative_to(tmp) for f in files])


def _swap(tmp: Path, dest: Path) -> None:
    """Put the finished dataset `tmp` in the place of `dest`: the old copy is moved aside
    first (a directory cannot be renamed onto a non-empty one), put back when the second
    rename fails, and removed after it. A kill between the two renames leaves
    `.DEST.old-PID`, which `recover` puts back."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover(dest: str | Path) -> None:
    """Undo what a killed export left beside `dest`: when `dest` is missing, the copy it
    moved aside (`.DEST.old-PID`, the newest) is put back; every other old copy and every
    partial folder (`.DEST.partial-*`) is removed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not dest.exists():
        os.replace(olds.pop(), dest)
    for stale in [*olds, *dest.parent.glob(f".{dest.name}.partial-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _write(data: Dataset, view: StoreView, out: Path, root: Path, options: ExportOptions) -> list[Path]:
    from vidpipe.export.iqiyi import write_iqiyi
    from vidpipe.export.parquet import write_parquet
    from vidpipe.export.report import write_report

    files = (write_iqiyi if options.fmt == "iqiyi" else write_parquet)(data, out, root)
    if options.fmt == "iqiyi":  # Parquet's clips.parquet says all this already
        data.clips.to_csv(root / "clips.csv", index=False)
    ids = data.clips[data.clips.identity_id > 0].groupby(["identity_id", "identity"]).split.value_counts().unstack(fill_value=0)
    ids.reindex(columns=list(SPLITS), fill_value=0).reset_index().to_csv(root / "identities.csv", index=False)
    meta = {"vidpipe_version": __version__, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "store": data.store, "format": options.fmt, "options": data.options, "clips": len(data.clips),
            "identities": len(data.identities), "splits": data.clips.split.value_counts().to_dict()}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    files += [root / "identities.csv", root / "dataset.json", write_report(data, view, root / "report.html")]
    return files
