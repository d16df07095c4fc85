"""The gallery: enrolled people and their face embeddings, in one SQLite file.

SQLite (the standard library's sqlite3) because a gallery is small, edited a little at a
time (a person added, a photo replaced, a name fixed) and must survive being killed
mid-way: every change is one transaction. The schema is versioned with
`PRAGMA user_version`; `MIGRATIONS[i]` brings version i to i + 1 and runs when an older
file is opened. Tables (documented in the README):

- `meta(key, value)`: `fingerprint` (the face backends and weights sha256 the embeddings
  were made with), `gallery_id` (a random id, so tagging state from another file is never
  reused), `revision` (bumped by every change), `calibration` (optional saved threshold).
- `people(person_id, name, revision, created_at)`: `revision` is the gallery revision of the
  person's last face change (a rename does not change it), which lets tagging re-decide
  only the clips a change can affect.
- `sources(source_id, person_id, path, kind, size_bytes, mtime_ns, sha256, status, detail,
  added_at)`: one enrolled file (photo or video) or named unknown cluster; files without a
  usable face are kept with their status so re-runs do not retry them.
- `faces(face_id, source_id, time_s, bbox, det_score, quality, embedding)`: embedding is
  the L2-normalised float32 vector as little-endian bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vidpipe.identities.encoder import Fingerprint, IdentitiesError

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE people (
        person_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sources (
        source_id INTEGER PRIMARY KEY AUTOINCREMENT,
        person_id INTEGER NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        path TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('photo', 'video', 'cluster')),
        size_bytes INTEGER,
        mtime_ns INTEGER,
        sha256 TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'no_face', 'ambiguous', 'unreadable')),
        detail TEXT,
        added_at TEXT NOT NULL
    );
    CREATE INDEX sources_person ON sources(person_id);
    CREATE TABLE faces (
        face_id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_id INTEGER NOT NULL REFERENCES sources(source_id) ON DELETE CASCADE,
        time_s REAL,
        bbox TEXT NOT NULL,
        det_score REAL NOT NULL,
        quality REAL NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX faces_source ON faces(source_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class Person:
    person_id: int
    name: str
    revision: int
    n_faces: int
    n_sources: int
    n_unusable: int  # files enrolled for this person that had no usable face


@dataclass
class Source:
    source_id: int
    person: str
    path: str
    kind: str
    size_bytes: int | None
    mtime_ns: int | None
    sha256: str | None
    status: str
    detail: str | None


@dataclass
class GalleryFace:
    """A face to store: where it came from and its normalised embedding."""

    embedding: np.ndarray
    bbox: tuple[float, float, float, float]
    det_score: float
    quality: float
    time_s: float | None = None


@dataclass
class Templates:
    """Every person with faces: ids, names, revisions and the L2-normalised mean of their
    face embeddings (one row per person), what clips and photos are matched against."""

    person_ids: np.ndarray
    names: list[str]
    revisions: np.ndarray
    matrix: np.ndarray  # (people, dim) float32


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Gallery:
    """One gallery file. `Gallery.open(path)` opens (or, with `create`, makes) it;
    use as a context manager, or call `close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | Path, create: bool = False) -> "Gallery":
        path = Path(path)
        if not path.exists() and not create:
            raise IdentitiesError(f"no gallery at {path}: enrol people first with `vidpipe enroll DIR --db {path}`")
        if path.is_dir():
            raise IdentitiesError(f"{path} is a directory, not a gallery file")
        try:
            conn = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
        except sqlite3.Error as e:
            raise IdentitiesError(f"cannot open gallery {path}: {e}") from None
        gallery = cls(path, conn)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            gallery._migrate()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise IdentitiesError(f"{path} is not a vidpipe gallery ({e})") from None
        except IdentitiesError:
            conn.close()
            raise
        return gallery

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise IdentitiesError(f"gallery {self.path} has schema version {version}, newer than this vidpipe "
                                  f"knows ({SCHEMA_VERSION}): upgrade vidpipe")
        if version == 0 and self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise IdentitiesError(f"{self.path} is an SQLite file but not a vidpipe gallery")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                for statement in _statements(MIGRATIONS[target - 1]):
                    self.conn.execute(statement)
                if target == 1:
                    self._set_meta("gallery_id", uuid.uuid4().hex)
                    self._set_meta("revision", "0")
                self.conn.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> "_Transaction":
        """`with gallery.transaction():` — all or nothing (BEGIN IMMEDIATE … COMMIT)."""
        return _Transaction(self.conn)

    # ---------------------------------------------------------------- meta

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                          (key, value))

    @property
    def gallery_id(self) -> str:
        return self._meta("gallery_id") or ""

    @property
    def revision(self) -> int:
        return int(self._meta("revision") or 0)

    def _bump(self) -> int:
        revision = self.revision + 1
        self._set_meta("revision", str(revision))
        return revision

    @property
    def fingerprint(self) -> Fingerprint | None:
        text = self._meta("fingerprint")
        return None if text is None else Fingerprint.from_json(text)

    def require_fingerprint(self, fingerprint: Fingerprint) -> None:
        """Set the gallery's backends on first use; refuse different ones later."""
        mine = self.fingerprint
        if mine is None:
            with self.transaction():
                self._set_meta("fingerprint", fingerprint.to_json())
        elif mine != fingerprint:
            raise IdentitiesError(f"gallery {self.path} holds embeddings of {mine.describe()}, not of "
                                  f"{fingerprint.describe()}: use the same face backend and weights, or a new gallery")

    @property
    def calibration(self) -> tuple[float, float] | None:
        """(threshold, margin) saved by `vidpipe gallery calibrate --save`, if any."""
        text = self._meta("calibration")
        return None if text is None else tuple(json.loads(text))  # type: ignore[return-value]

    def save_calibration(self, threshold: float, margin: float) -> None:
        with self.transaction():
            self._set_meta("calibration", json.dumps([threshold, margin]))
            self._bump()

    # ---------------------------------------------------------------- people

    def people(self) -> list[Person]:
        rows = self.conn.execute(
            """SELECT p.person_id, p.name, p.revision,
                      (SELECT count(*) FROM faces f JOIN sources s USING (source_id) WHERE s.person_id = p.person_id),
                      (SELECT count(*) FROM sources s WHERE s.person_id = p.person_id),
                      (SELECT count(*) FROM sources s WHERE s.person_id = p.person_id AND s.status != 'ok')
               FROM people p ORDER BY p.name"""
        ).fetchall()
        return [Person(*row) for row in rows]

    def person_id(self, name: str) -> int | None:
        row = self.conn.execute("SELECT person_id FROM people WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _ensure_person(self, name: str) -> int:
        pid = self.person_id(name)
        if pid is None:
            pid = self.conn.execute("INSERT INTO people(name, revision, created_at) VALUES (?, ?, ?)",
                                    (name, self.revision, _now())).lastrowid
        return pid

    def _need(self, name: str) -> int:
        pid = self.person_id(name)
        if pid is None:
            known = ", ".join(p.name for p in self.people()) or "none"
            raise IdentitiesError(f"no person {name!r} in gallery {self.path} (people: {known})")
        return pid

    def remove(self, name: str) -> None:
        pid = self._need(name)
        with self.transaction():
            self.conn.execute("DELETE FROM people WHERE person_id = ?", (pid,))
            self._bump()

    def rename(self, old: str, new: str) -> None:
        """A new name for a person; when `new` is already a person, the two are merged."""
        pid = self._need(old)
        if not new.strip():
            raise IdentitiesError("a person's name cannot be empty")
        target = self.person_id(new)
        with self.transaction():
            revision = self._bump()
            if target is None:
                self.conn.execute("UPDATE people SET name = ? WHERE person_id = ?", (new, pid))
            else:
                self.conn.execute("UPDATE sources SET person_id = ? WHERE person_id = ?", (target, pid))
                self.conn.execute("DELETE FROM people WHERE person_id = ?", (pid,))
                self.conn.execute("UPDATE people SET revision = ? WHERE person_id = ?", (revision, target))

    # ---------------------------------------------------------------- sources and faces

    def sources(self, under: str | None = None) -> list[Source]:
        """Every source (with `under`: those whose path starts with it)."""
        query = """SELECT s.source_id, p.name, s.path, s.kind, s.size_bytes, s.mtime_ns, s.sha256, s.status, s.detail
                   FROM sources s JOIN people p USING (person_id)"""
        args: tuple = ()
        if under is not None:
            query += " WHERE substr(s.path, 1, ?) = ?"
            args = (len(under), under)
        return [Source(*row) for row in self.conn.execute(query + " ORDER BY s.path", args)]

    def source(self, path: str) -> Source | None:
        found = [s for s in self.sources(under=path) if s.path == path]
        return found[0] if found else None

    def put_source(self, person: str, path: str, kind: str, faces: Iterable[GalleryFace], status: str = "ok",
                   detail: str | None = None, size_bytes: int | None = None, mtime_ns: int | None = None,
                   sha256: str | None = None) -> None:
        """Add or replace one source and its faces, all in one transaction."""
        faces = list(faces)
        with self.transaction():
            revision = self._bump()
            old = self.conn.execute("SELECT person_id FROM sources WHERE path = ?", (path,)).fetchone()
            if old is not None:
                self.conn.execute("DELETE FROM sources WHERE path = ?", (path,))
                self.conn.execute("UPDATE people SET revision = ? WHERE person_id = ?", (revision, old[0]))
            pid = self._ensure_person(person)
            sid = self.conn.execute(
                """INSERT INTO sources(person_id, path, kind, size_bytes, mtime_ns, sha256, status, detail, added_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (pid, path, kind, size_bytes, mtime_ns, sha256, status, detail, _now()),
            ).lastrowid
            self.conn.executemany(
                "INSERT INTO faces(source_id, time_s, bbox, det_score, quality, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                [(sid, f.time_s, json.dumps([round(float(v), 2) for v in f.bbox]), float(f.det_score), float(f.quality),
                  np.asarray(f.embedding, "<f4").tobytes()) for f in faces],
            )
            if faces:
                self.conn.execute("UPDATE people SET revision = ? WHERE person_id = ?", (revision, pid))

    def touch_source(self, path: str, size_bytes: int, mtime_ns: int) -> None:
        """Same bytes, new file times: remember them so the next run need not rehash."""
        with self.transaction():
            self.conn.execute("UPDATE sources SET size_bytes = ?, mtime_ns = ? WHERE path = ?", (size_bytes, mtime_ns, path))

    def drop_sources(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if not paths:
            return
        with self.transaction():
            revision = self._bump()
            for path in paths:
                row = self.conn.execute("SELECT person_id FROM sources WHERE path = ?", (path,)).fetchone()
                if row is not None:
                    self.conn.execute("DELETE FROM sources WHERE path = ?", (path,))
                    self.conn.execute("UPDATE people SET revision = ? WHERE person_id = ?", (revision, row[0]))

    def face_embeddings(self) -> tuple[np.ndarray, list[str]]:
        """Every usable face: (N, dim) embeddings and the person name of each row."""
        rows = self.conn.execute(
            "SELECT p.name, f.embedding FROM faces f JOIN sources s USING (source_id) JOIN people p USING (person_id) "
            "ORDER BY f.face_id"
        ).fetchall()
        if not rows:
            return np.zeros((0, 0), np.float32), []
        return np.stack([np.frombuffer(r[1], "<f4") for r in rows]), [r[0] for r in rows]

    def templates(self) -> Templates:
        """Each person's template: the normalised mean of their face embeddings."""
        embeddings, names = self.face_embeddings()
        people = {p.name: p for p in self.people() if p.n_faces}
        order = sorted(people)
        if not order:
            return Templates(np.zeros(0, np.int64), [], np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        index = {n: i for i, n in enumerate(order)}
        sums = np.zeros((len(order), embeddings.shape[1]), np.float64)
        np.add.at(sums, [index[n] for n in names], embeddings)
        matrix = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
        return Templates(np.array([people[n].person_id for n in order]), order,
                         np.array([people[n].revision for n in order]), matrix)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script (executescript would commit mid-transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            yield statement
