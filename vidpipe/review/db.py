"""The review database: every decision and lease, in one SQLite file in WAL mode.

It lives beside the gallery (`gallery.db` -> `gallery.review.db`) because a decision ties
a store's clip to a gallery identity. SQLite in WAL mode because decisions come one at a
time from several browser tabs (threads) and sometimes two servers, each must be on disk
the moment it is made (a refresh or a restart loses nothing), and readers (the export, the
identities reader's `review.parquet`) must never block a reviewer. The schema is versioned
with `PRAGMA user_version` as the gallery's is. Tables:

- `meta(key, value)`: `secret` (random; access and CSRF tokens are derived from it, so a
  restarted server still accepts the page's token and the printed URL stays the same).
- `decisions(decision_id, clip_id, subject, pass, verdict, label, proposed, score,
  reviewer, decided_at)`: one row per clip, subject and pass (1: first review, 2: the
  blind second review, 3: the arbiter's decision on a disagreement); deciding again
  replaces it. `subject` is '' for a decision on the whole clip (one identity per clip),
  else the person of a library store's clip it is about (the name proposed for them).
- `leases(clip_id, pass, holder, expires)`: an item (`item_key`: a clip, or one person of
  it) handed to one browser tab, so that two tabs never review it at the same time; it
  lapses after `LEASE_S`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vidpipe.identities.encoder import IdentitiesError
from vidpipe.identities.match import UNKNOWN
from vidpipe.identities.table import NOISE

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE decisions (
        decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
        clip_id TEXT NOT NULL,
        pass INTEGER NOT NULL CHECK (pass IN (1, 2, 3)),
        verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'assign', 'noise')),
        label TEXT NOT NULL,
        proposed TEXT,
        score REAL,
        reviewer TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        UNIQUE (clip_id, pass)
    );
    CREATE TABLE leases (
        clip_id TEXT NOT NULL,
        pass INTEGER NOT NULL,
        holder TEXT NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (clip_id, pass)
    );
    """,
    # 1 -> 2: a decision is about one person of the clip (`subject`, the name proposed for
    # them; '' for the whole clip), so that in a library store deciding on one person of a
    # two-shot leaves the other's tag alone. Leases then hold item keys (see `item_key`).
    """
    CREATE TABLE decisions_2 (
        decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
        clip_id TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        pass INTEGER NOT NULL CHECK (pass IN (1, 2, 3)),
        verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'assign', 'noise')),
        label TEXT NOT NULL,
        proposed TEXT,
        score REAL,
        reviewer TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        UNIQUE (clip_id, subject, pass)
    );
    INSERT INTO decisions_2(decision_id, clip_id, pass, verdict, label, proposed, score, reviewer, decided_at)
        SELECT decision_id, clip_id, pass, verdict, label, proposed, score, reviewer, decided_at FROM decisions;
    DROP TABLE decisions;
    ALTER TABLE decisions_2 RENAME TO decisions;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
APPLICATION_ID = 0x76707276  # 'vprv': tells a review file from a gallery, whose user_version also counts up
PASSES = (1, 2, 3)
VERDICTS = ("accept", "reject", "assign", "noise")
LEASE_S = 120.0  # a tab renews its lease every 30 s while the clip is on screen
REJECTED = UNKNOWN  # the label of a rejected clip: not the proposed person, nobody knows who


class ReviewError(IdentitiesError):
    """A decision that cannot be taken (unknown clip, bad verdict, a reviewer's own clip in pass 2)."""


@dataclass(frozen=True)
class Decision:
    clip_id: str
    pass_: int
    verdict: str
    label: str  # a person's name, 'unknown' (rejected) or '0' (noise: a distractor)
    proposed: str | None
    score: float | None
    reviewer: str
    decided_at: str
    decision_id: int = 0
    subject: str = ""  # '' : the whole clip; else the person of the clip it is about

    @property
    def item(self) -> tuple[str, str]:
        return (self.clip_id, self.subject)


def item_key(clip_id: str, subject: str = "") -> str:
    """One review item as a lease key: the clip, or `CLIP#PERSON`."""
    return f"{clip_id}#{subject}" if subject else clip_id


def review_db_path(gallery: str | Path) -> Path:
    """Where the review decisions of a gallery live: beside it."""
    gallery = Path(gallery)
    return gallery.with_name(gallery.stem + ".review.db")


def label_of(verdict: str, proposed: str | None, identity: str | None) -> str:
    if verdict not in VERDICTS:
        raise ReviewError(f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}")
    if verdict == "accept":
        if not proposed or proposed in (UNKNOWN, NOISE):
            raise ReviewError("nobody was proposed for this clip: assign a person or mark it as noise")
        return proposed
    if verdict == "assign":
        if not identity or not identity.strip() or identity.strip() in (UNKNOWN, NOISE):
            raise ReviewError("assign needs a person's name")
        return identity.strip()
    return REJECTED if verdict == "reject" else NOISE


class ReviewDB:
    """One review file, safe to share between threads (one connection, one lock) and
    between processes (SQLite's own locking: every write is BEGIN IMMEDIATE … COMMIT)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ReviewError(f"{self.path} is a directory, not a review file")
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")  # a decision is on disk when the page hears back
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise ReviewError(f"{self.path} is not a vidpipe review file ({e})") from None
        self.lock = threading.RLock()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ReviewError(f"review file {self.path} has schema version {version}, newer than this vidpipe "
                              f"knows ({SCHEMA_VERSION}): upgrade vidpipe")
        if version == 0 and self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] or \
                version > 0 and self.conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            raise ReviewError(f"{self.path} is not a vidpipe review file (another SQLite file)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                if target == 1:
                    self.conn.execute("INSERT INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
                    self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {target}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ReviewDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self.conn.execute(sql, args)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    @property
    def secret(self) -> str:
        return self.conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]

    # ---------------------------------------------------------------- decisions

    def decide(self, clip_id: str, pass_: int, verdict: str, reviewer: str, proposed: str | None,
               score: float | None, identity: str | None = None, subject: str = "") -> Decision:
        """Record (or replace) one decision on the clip (or on its person `subject`) and
        release the item's lease, in one transaction."""
        if pass_ not in PASSES:
            raise ReviewError(f"pass must be one of {PASSES}, not {pass_}")
        reviewer = (reviewer or "").strip() or "reviewer"
        label = label_of(verdict, proposed, identity)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with self.lock:
            if pass_ == 2:
                first = self.decision(clip_id, 1, subject)
                if first is None:
                    raise ReviewError(f"clip {clip_id} has no first review yet")
                if first.reviewer == reviewer:
                    raise ReviewError(f"the second review of {clip_id} must be by another reviewer than {reviewer}")
            self._write([
                ("""INSERT INTO decisions(clip_id, subject, pass, verdict, label, proposed, score, reviewer, decided_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(clip_id, subject, pass) DO UPDATE SET verdict = excluded.verdict,
                      label = excluded.label, proposed = excluded.proposed, score = excluded.score,
                      reviewer = excluded.reviewer, decided_at = excluded.decided_at""",
                 (clip_id, subject, pass_, verdict, label, proposed, score, reviewer, now)),
                ("DELETE FROM leases WHERE clip_id = ? AND pass = ?", (item_key(clip_id, subject), pass_)),
            ])
            return self.decision(clip_id, pass_, subject)  # type: ignore[return-value]

    def decision(self, clip_id: str, pass_: int, subject: str = "") -> Decision | None:
        rows = self._decisions("WHERE clip_id = ? AND subject = ? AND pass = ?", (clip_id, subject, pass_))
        return rows[0] if rows else None

    def decisions(self, pass_: int | None = None, after_id: int = 0) -> list[Decision]:
        """Decisions (of one pass), oldest first; `after_id` reads only newer ones."""
        if pass_ is None:
            return self._decisions("WHERE decision_id > ? ORDER BY decision_id", (after_id,))
        return self._decisions("WHERE pass = ? AND decision_id > ? ORDER BY decision_id", (pass_, after_id))

    def recent(self, n: int = 20, pass_: int | None = None) -> list[Decision]:
        """The latest decisions, newest first (by time of deciding, re-decisions included)."""
        where, args = ("WHERE pass = ?", (pass_,)) if pass_ else ("", ())
        return self._decisions(f"{where} ORDER BY decided_at DESC, decision_id DESC LIMIT ?", (*args, n))

    def _decisions(self, tail: str, args: tuple) -> list[Decision]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT clip_id, pass, verdict, label, proposed, score, reviewer, decided_at, decision_id, subject "
                f"FROM decisions {tail}", args).fetchall()
        return [Decision(*row) for row in rows]

    # ---------------------------------------------------------------- leases

    def lease(self, order: list[str], pass_: int, holder: str, lease_s: float = LEASE_S) -> str | None:
        """The holder's own unexpired lease when it is still in `order` (a reloaded tab gets
        its clip back), else the first clip of `order` nobody holds, now leased to `holder`
        (its other leases of the pass lapse); None when every clip is taken. Atomic across
        threads and processes (the choice and the lease are one transaction)."""
        now = time.time()
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("DELETE FROM leases WHERE expires < ?", (now,))
                mine = {r[0] for r in self.conn.execute("SELECT clip_id FROM leases WHERE holder = ? AND pass = ?",
                                                        (holder, pass_))}
                chosen = next((c for c in order if c in mine), None)
                if chosen is None:
                    self.conn.execute("DELETE FROM leases WHERE holder = ? AND pass = ?", (holder, pass_))
                    taken = {r[0] for r in self.conn.execute("SELECT clip_id FROM leases WHERE pass = ?", (pass_,))}
                    chosen = next((c for c in order if c not in taken), None)
                if chosen is not None:
                    self.conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)",
                                      (chosen, pass_, holder, now + lease_s))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return chosen

    def renew(self, clip_id: str, pass_: int, holder: str, lease_s: float = LEASE_S) -> bool:
        with self.lock:
            cur = self.conn.execute("UPDATE leases SET expires = ? WHERE clip_id = ? AND pass = ? AND holder = ?",
                                    (time.time() + lease_s, clip_id, pass_, holder))
        return cur.rowcount == 1

    def release(self, holder: str) -> None:
        self._write([("DELETE FROM leases WHERE holder = ?", (holder,))])

    def holder_of(self, clip_id: str, pass_: int) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT holder FROM leases WHERE clip_id = ? AND pass = ? AND expires >= ?",
                                    (clip_id, pass_, time.time())).fetchone()
        return None if row is None else row[0]


def final_labels(decisions: Iterable[Decision], min_passes: int = 1) -> dict[tuple[str, str], Decision]:
    """Each reviewed item's (clip, subject: `Decision.item`) standing decision: the
    arbiter's (pass 3) when there is one, else the first review when the second agrees
    with it or (with `min_passes=1`) has not happened yet. Items whose two reviews
    disagree and await the arbiter are left out."""
    by_clip = _by_item(decisions)
    out: dict[tuple[str, str], Decision] = {}
    for clip, passes in by_clip.items():
        if 3 in passes:
            out[clip] = passes[3]
        elif 1 in passes and 2 in passes:
            if passes[1].label == passes[2].label:
                out[clip] = passes[1]
        elif 1 in passes and min_passes <= 1:
            out[clip] = passes[1]
    return out


def disagreements(decisions: Iterable[Decision]) -> dict[tuple[str, str], tuple[Decision, Decision]]:
    """Items whose first and second reviews gave different labels: the third queue."""
    by_clip = _by_item(decisions)
    return {c: (p[1], p[2]) for c, p in by_clip.items() if 1 in p and 2 in p and p[1].label != p[2].label}


def _by_item(decisions: Iterable[Decision]) -> dict[tuple[str, str], dict[int, Decision]]:
    out: dict[tuple[str, str], dict[int, Decision]] = {}
    for d in decisions:
        out.setdefault(d.item, {})[d.pass_] = d
    return out
