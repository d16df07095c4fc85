"""Enrolment: a folder per person (photos and/or video clips) into the gallery.

Every usable face is embedded with the faces stage's own backends. A photo is usable when
it has one face, or one clearly biggest face (`DOMINANT_AREA_RATIO`); photos without a
face or with several people of similar size are reported by path and kept out. A video
clip gives the dominant face of each sampled frame, the best `faces.top_k` by quality.

Re-running is incremental: a file whose size and modification time (or, when those
changed, sha256) are as recorded is not looked at again; files gone from an enrolled
folder leave the gallery. Each file is written in its own transaction, so a killed
enrolment leaves whole files only, and a new gallery file is created only once some face
is usable (a folder of non-images writes nothing). One `enroll` per gallery at a time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from vidpipe.config import Config
from vidpipe.identities.encoder import IMAGE_EXTENSIONS, Face, FaceEncoder, IdentitiesError, dominant
from vidpipe.identities.gallery import Gallery, GalleryFace
from vidpipe.identities.locks import gallery_lock


@dataclass
class Problem:
    """A file that was not used, and why (one line)."""

    path: str
    reason: str


@dataclass
class EnrollReport:
    db: Path
    added: list[str] = field(default_factory=list)  # files embedded now with a usable face
    unchanged: int = 0  # files already enrolled, not looked at again
    removed: list[str] = field(default_factory=list)  # files gone from an enrolled folder
    problems: list[Problem] = field(default_factory=list)  # files looked at now and not used
    faces_added: int = 0
    people: int = 0  # people in the gallery afterwards


@dataclass
class _Item:
    person: str
    path: Path
    kind: str  # 'photo' | 'video'


@dataclass
class _Result:
    item: _Item
    faces: list[GalleryFace]
    status: str  # 'ok' | 'no_face' | 'ambiguous' | 'unreadable'
    detail: str | None
    size_bytes: int
    mtime_ns: int
    sha256: str


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))


def _collect(inputs: Sequence[Path], name: str | None, video_exts: Sequence[str]) -> tuple[list[_Item], list[Problem], list[Path]]:
    """(files to enrol, files that cannot be, folders whose vanished files leave the gallery)."""
    items: list[_Item] = []
    problems: list[Problem] = []
    synced: list[Path] = []
    videos = {e.lower() for e in video_exts}

    def add(person: str, path: Path) -> None:
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            items.append(_Item(person, path, "photo"))
        elif ext in videos:
            items.append(_Item(person, path, "video"))
        else:
            problems.append(Problem(str(path), "not an image or video file"))

    for root in inputs:
        root = root.absolute()
        if not root.exists():
            raise IdentitiesError(f"{root}: no such file or directory")
        if name is not None:
            for f in _files(root):
                add(name, f)
            if root.is_dir():
                synced.append(root)
            continue
        if not root.is_dir():
            raise IdentitiesError(f"{root} is a file: give a folder with one sub-folder per person, or --name NAME")
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                for f in _files(entry):
                    add(entry.name, f)
            else:
                problems.append(Problem(str(entry), "not inside a person's folder (GALLERY_DIR/NAME/photo.jpg)"))
        synced.append(root)
    return items, problems, synced


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_gallery(face: Face, time_s: float | None = None) -> GalleryFace:
    return GalleryFace(face.embedding, tuple(float(v) for v in face.bbox), face.det_score, face.quality, time_s)


def _judge(faces: list[Face] | None) -> tuple[Face | None, str, str | None]:
    if faces is None:
        return None, "unreadable", "cannot be decoded as an image"
    if not faces:
        return None, "no_face", "no face found"
    face = dominant(faces)
    if face is None:
        return None, "ambiguous", f"{len(faces)} faces and none clearly the biggest: whose photo is it?"
    return face, "ok", None


class _Embedder:
    """Photos and video clips -> gallery faces, with the run's face backends."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.encoder = FaceEncoder(cfg)

    def photos(self, items: list[_Item]) -> list[tuple[list[GalleryFace], str, str | None]]:
        from vidpipe.identities.encoder import read_image

        images = [read_image(i.path) for i in items]
        readable = [img for img in images if img is not None]
        found = iter(self.encoder.faces(readable) if readable else [])
        out = []
        for img in images:
            face, status, detail = _judge(None if img is None else next(found))
            out.append(([_to_gallery(face)] if face is not None else [], status, detail))
        return out

    def video(self, item: _Item) -> tuple[list[GalleryFace], str, str | None]:
        from vidpipe.video import VideoError, decode, probe

        picked: list[GalleryFace] = []
        seen = ambiguous = 0
        batch: list = []

        def flush() -> None:
            nonlocal seen, ambiguous
            for frame, faces in zip(batch, self.encoder.faces([f.image for f in batch])):
                face = dominant(faces)
                seen += bool(faces)
                ambiguous += bool(faces) and face is None
                if face is not None:
                    picked.append(_to_gallery(face, frame.time_s))
            batch.clear()

        try:
            info = probe(item.path)
            for frame in decode(info, sample_fps=self.cfg.sampling.fps, max_side=self.cfg.sampling.max_side,
                                threads=self.cfg.run.threads):
                if frame.image is not None:
                    batch.append(frame)
                    if len(batch) >= self.encoder.options.batch_size:
                        flush()
            flush()
        except VideoError as e:
            return [], "unreadable", str(e)
        if not picked:
            if seen:
                return [], "ambiguous", f"several faces of similar size in all {ambiguous} frames with faces"
            return [], "no_face", "no face found in any sampled frame"
        picked.sort(key=lambda f: -f.quality)
        return picked[: self.cfg.faces.top_k], "ok", None


def enroll(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    db: str | os.PathLike[str],
    config: Config | None = None,
    *,
    name: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EnrollReport:
    """Enrol people into the gallery file `db` (created when missing).

    Without `name`, each input is a folder holding one sub-folder per person (the folder
    name is the person's name). With `name`, every photo and video under the inputs is of
    that person. `on_progress(done, total)` follows the files looked at.
    """
    cfg = config or Config()
    inputs = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if name is not None and not name.strip():
        raise IdentitiesError("a person's name cannot be empty")
    db = Path(db)
    items, problems, synced = _collect(inputs, name, cfg.run.extensions)
    if not items:
        what = f"{len(problems)} other file(s), e.g. {Path(problems[0].path).name}" if problems else "nothing"
        raise IdentitiesError(f"no photos or videos under {', '.join(map(str, inputs))} ({what}); "
                              f"photos: {' '.join(IMAGE_EXTENSIONS)}")
    with gallery_lock(db):
        return _enroll(cfg, db, items, problems, synced, on_progress)


def _enroll(cfg: Config, db: Path, items: list[_Item], problems: list[Problem], synced: list[Path],
            on_progress: Callable[[int, int], None] | None) -> EnrollReport:
    report = EnrollReport(db, problems=problems)
    gallery = Gallery.open(db) if db.exists() else None
    try:
        embedder = _Embedder(cfg)
        if gallery is not None:
            gallery.require_fingerprint(embedder.encoder.fingerprint)
        todo = _changed(items, gallery, report)
        results = _embed(embedder, todo, on_progress, len(items) - len(todo))
        if gallery is None:
            if not any(r.status == "ok" for r in results):
                first = results[0] if results else None
                example = f" (e.g. {first.item.path}: {first.detail})" if first is not None else ""
                raise IdentitiesError(f"no usable face in any of {len(results)} file(s); nothing enrolled{example}")
            gallery = Gallery.open(db, create=True)
            gallery.require_fingerprint(embedder.encoder.fingerprint)
        for r in results:
            gallery.put_source(r.item.person, str(r.item.path), r.item.kind, r.faces, r.status, r.detail,
                               r.size_bytes, r.mtime_ns, r.sha256)
            if r.status == "ok":
                report.added.append(str(r.item.path))
                report.faces_added += len(r.faces)
            else:
                report.problems.append(Problem(str(r.item.path), r.detail or r.status))
        present = {str(i.path) for i in items}
        for root in synced:
            gone = [s.path for s in gallery.sources(under=str(root) + os.sep) if s.kind != "cluster" and s.path not in present]
            gallery.drop_sources(gone)
            report.removed += gone
        report.people = sum(p.n_faces > 0 for p in gallery.people())
    finally:
        if gallery is not None:
            gallery.close()
    return report


def _changed(items: list[_Item], gallery: Gallery | None, report: EnrollReport) -> list[tuple[_Item, os.stat_result, str | None]]:
    """Items whose file is new or changed (with their stat and, when computed, sha256)."""
    todo = []
    for item in items:
        st = item.path.stat()
        known = gallery.source(str(item.path)) if gallery is not None else None
        if known is not None and known.person == item.person:
            if (known.size_bytes, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
                report.unchanged += 1
                continue
            digest = _sha256(item.path)
            if digest == known.sha256:
                gallery.touch_source(str(item.path), st.st_size, st.st_mtime_ns)
                report.unchanged += 1
                continue
            todo.append((item, st, digest))
        else:
            todo.append((item, st, None))
    return todo


def _embed(embedder: _Embedder, todo, on_progress, done: int) -> list[_Result]:
    total = done + len(todo)
    results: list[_Result] = []
    photos = [t for t in todo if t[0].kind == "photo"]
    videos = [t for t in todo if t[0].kind == "video"]
    step = max(1, embedder.encoder.options.batch_size)
    for i in range(0, len(photos), step):
        chunk = photos[i : i + step]
        for (item, st, digest), (faces, status, detail) in zip(chunk, embedder.photos([t[0] for t in chunk])):
            results.append(_Result(item, faces, status, detail, st.st_size, st.st_mtime_ns, digest or _sha256(item.path)))
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, total)
    for item, st, digest in videos:
        faces, status, detail = embedder.video(item)
        results.append(_Result(item, faces, status, detail, st.st_size, st.st_mtime_ns, digest or _sha256(item.path)))
        done += 1
        if on_progress is not None:
            on_progress(done, total)
    return results
