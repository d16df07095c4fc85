"""Decisions as identities: `OUT/identities/review.parquet` (IDENTITY_SCHEMA, source
'review'), so `read_identities`, `resolve` and the timeline see what reviewers decided.

One row per standing decision (see `final_labels`): the person's name, `unknown` for a
rejected proposal, `0` for noise; score 1. A decision on one person of a library clip
carries that person's track, so it decides that person only (`resolve`). The SQLite file is the
record; this table is rewritten from it (atomically) a moment after each decision.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from vidpipe.identities.table import IDENTITY_SCHEMA, write_identities
from vidpipe.review.db import ReviewDB, final_labels
from vidpipe.review.queue import StoreView

TABLE_NAME = "review"


def review_rows(db: ReviewDB, view: StoreView) -> pd.DataFrame:
    """One row per standing decision on a kept clip of `view`: clip-level rows for whole
    clips, and for one person of a library clip a row with that person's track and range
    (so `resolve` replaces that person only; a person no longer proposed keeps the clip's
    range under track -1)."""
    final = final_labels(db.decisions())
    rows = []
    for (clip_id, subject), d in sorted(final.items()):
        if clip_id not in view.clips:
            continue
        track = start = end = None
        if subject:
            person = next((p for p in view.people.get(clip_id, []) if p.identity == subject), None)
            track, start, end = (-1, None, None) if person is None else (person.track, person.start_s, person.end_s)
        rows.append((clip_id, d.label, 1.0, "review", track, start, end))
    return pd.DataFrame(rows, columns=IDENTITY_SCHEMA.names).astype({"track": "Int32"})


def publish(out: str | Path, db: ReviewDB, view: StoreView) -> Path:
    """Rewrite OUT/identities/review.parquet from the review file (clips of this store only)."""
    return write_identities(out, TABLE_NAME, review_rows(db, view))


class Publisher:
    """Rewrites review.parquet in the background, at most once per `delay_s`, so that a
    decision answers at once; `close` writes whatever is pending."""

    def __init__(self, out: Path, db: ReviewDB, view: StoreView, delay_s: float = 0.5) -> None:
        self.out, self.db, self.view, self.delay_s = out, db, view, delay_s
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="review-publisher", daemon=True)
        self._thread.start()

    def mark(self) -> None:
        self._pending.set()

    def flush(self) -> None:
        with self._lock:
            self._pending.clear()
            publish(self.out, self.db, self.view)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._pending.wait(0.5) and not self._stop.wait(self.delay_s):
                self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._pending.is_set():
            self.flush()
