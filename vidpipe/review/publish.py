"""Decisions as identities: `OUT/identities/review.parquet` (IDENTITY_SCHEMA, source
'review'), so `read_identities`, `resolve` and the timeline see what reviewers decided.

One clip-level row per clip with a standing decision (see `final_labels`): the person's
name, `unknown` for a rejected proposal, `0` for noise; score 1. The SQLite file is the
record; this table is rewritten from it (atomically) a moment after each decision.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from vidpipe.identities.table import write_identities
from vidpipe.review.db import ReviewDB, final_labels

TABLE_NAME = "review"


def review_rows(db: ReviewDB, kept: set[str]) -> pd.DataFrame:
    final = final_labels(db.decisions())
    clips = sorted(c for c in final if c in kept)
    return pd.DataFrame({"clip_id": clips, "identity": [final[c].label for c in clips], "score": 1.0,
                         "source": "review", "track": None, "start_s": None, "end_s": None})


def publish(out: str | Path, db: ReviewDB, kept: set[str]) -> Path:
    """Rewrite OUT/identities/review.parquet from the review file (clips of this store only)."""
    return write_identities(out, TABLE_NAME, review_rows(db, kept))


class Publisher:
    """Rewrites review.parquet in the background, at most once per `delay_s`, so that a
    decision answers at once; `close` writes whatever is pending."""

    def __init__(self, out: Path, db: ReviewDB, kept: set[str], delay_s: float = 0.5) -> None:
        self.out, self.db, self.kept, self.delay_s = out, db, kept, delay_s
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
            publish(self.out, self.db, self.kept)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._pending.wait(0.5) and not self._stop.wait(self.delay_s):
                self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._pending.is_set():
            self.flush()
