"""One `tag` per store and one `enroll` per gallery at a time.

Two taggings of one store at once would each read the same state and write their own
tables and state last, so one's cluster ids overwrite or collide with the other's; two
enrolments of one gallery would each sync the same folders. The locks are advisory file
locks (filelock: `flock` on POSIX) on hidden files (`OUT/.tag.lock`, `.GALLERY.lock`
beside the gallery), which the kernel releases when the process dies, even
by SIGKILL, so a killed run never leaves a store or gallery locked. A second process
refuses in one line instead of waiting for an unknown time.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from vidpipe.identities.encoder import IdentitiesError


@contextmanager
def _exclusive(lock_file: Path, what: str, command: str) -> Iterator[None]:
    if not lock_file.parent.is_dir():  # nothing to protect: the command fails on its own
        yield
        return
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise IdentitiesError(f"{what} is in use by another vidpipe process (a `{command}` running on it): "
                              f"try again when it is done") from None
    try:
        yield
    finally:
        lock.release()


def store_lock(out: str | Path) -> "contextmanager[None]":
    """Held by `vidpipe tag` for the whole pass over store `out`."""
    out = Path(out)
    return _exclusive(out / ".tag.lock", f"store {out}", "vidpipe tag")


def gallery_lock(db: str | Path) -> "contextmanager[None]":
    """Held by `vidpipe enroll` while it changes gallery `db`."""
    db = Path(db)
    return _exclusive(db.with_name(f".{db.name}.lock"), f"gallery {db}", "vidpipe enroll")
