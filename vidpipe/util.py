"""Small helpers every layer shares: atomic writes, one-line error text, fitting a size."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import pkgutil
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `target` (hidden, so store readers skip it); renamed onto
    `target` when the block ends without an exception, removed otherwise.

    Readers therefore see either the old file or the whole new one, never half of it. The
    file gets the mode any new file gets (0666 less the umask), not mkstemp's private 0600."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        give_new_file_mode(fd)
    finally:
        os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (POSIX offers no way to read it but setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_new_file_mode(fd: int) -> None:
    """The mode any new file gets (0666 less the umask) for a file made by mkstemp (0600)."""
    os.fchmod(fd, 0o666 & ~current_umask())


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error, for one-line messages (the type when empty)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0].strip()


def fit_within(width: int, height: int, max_side: int, even: bool = False) -> tuple[int, int, float]:
    """(w, h, scale): the size with the longest side at most `max_side`, never enlarged.
    `even` rounds both sides to even numbers (what video scalers want)."""
    scale = min(1.0, max_side / max(width, height, 1))
    if even:
        w, h = max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
    else:
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return w, h, scale


def shrink(image, max_side: int):
    """(image with its longest side at most `max_side`, never enlarged; the scale applied).
    INTER_AREA: the right filter for shrinking."""
    import cv2

    h, w = image.shape[:2]
    nw, nh, scale = fit_within(w, h, max_side)
    if scale >= 1.0:
        return image, 1.0
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), scale


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block, as it was after it. For
    importing the model libraries and building the models: millions of long-lived objects
    that make each automatic full collection slower and are never garbage (torch's import
    alone ran dozens of them; 0.35 s of a 3 s start-up)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def blas_on_one_thread():
    """The OpenBLAS copies loaded now (NumPy's, SciPy's, dlib's) on one thread: a context
    manager that restores them at its end, or, called alone, for good. A run's BLAS calls
    are tiny (a clip's embeddings), and after each one OpenBLAS's idle threads spin on the
    cores the decoder and ONNX Runtime need: 3.5 % of a 2-core run's CPU samples, for 0.05 %
    in BLAS work. A library loaded later is not limited."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def load_plugins(package: str, group: str, skip: tuple[str, ...] = ()) -> None:
    """Import every public module of `package` (they register themselves) and every
    entry point of `group` (third-party plug-ins). A broken plug-in is logged, not fatal."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as e:
            logging.getLogger("vidpipe").warning("plug-in %s (%s) failed to load: %s", ep.name, group, first_line(e))
