"""Identities benchmark: enrolment, calibration, tagging and search speed. One command:

    python benchmarks/bench_identities.py [--weights ../shared/weights] [--media ../shared/media]

Prints one table. Rows:
- enrolment: the shared face photos (celebrity5_train, face_recognition_knn/train,
  deepface_ids) into a fresh gallery with the run's face backend, photos per second
  (models already loaded), and a re-run (nothing new: incremental);
- calibration: the leave-one-out calibration on the same photos (the shipped defaults);
- tagging: a synthetic store (constructed 128-d embeddings; 10 faces per clip, 100 clips
  per video, 70 % of clips of 100 enrolled people, 30 % of 300 strangers) tagged from
  scratch, then again after one new video, after one new gallery person, and unchanged;
- search: the face index (numpy matrix products in blocks of 65,536 rows, exact cosine)
  over 10,000 and 100,000 synthetic face rows: building it from the store, loading it
  from its cache, and one query (best face per clip, ranked); plus embedding one photo.

Timings are wall-clock on whatever else the machine is doing, so each row also gives the
process's CPU seconds (all its threads), which shared cores disturb much less: compare runs
on the same machine, idle if possible.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vidpipe.config import Config
from vidpipe.identities import Gallery, TagOptions, calibrate, enroll, tag
from vidpipe.identities.calibration import CALIBRATION_SETS
from vidpipe.identities.encoder import FaceEncoder
from vidpipe.identities.gallery import GalleryFace
from vidpipe.identities.index import face_index
from vidpipe.identities.synthetic import SYNTHETIC_FINGERPRINT, SyntheticClip, SyntheticFace, write_store

DIM = 128
ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    """(result, wall seconds, CPU seconds of this process: all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class World:
    """People as random directions; a face is its person's direction plus noise (cosine
    ~0.7 to the person, ~0 to others, like a good face embedder)."""

    def __init__(self, people: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.people = unit(self.rng.normal(size=(people, DIM)))

    def faces(self, person: int, n: int) -> np.ndarray:
        return unit(self.people[person] + 0.7 * unit(self.rng.normal(size=(n, DIM))))


def synthetic_videos(world: World, first: int, videos: int, clips_per_video: int, faces_per_clip: int,
                     known: int) -> dict[str, list[SyntheticClip]]:
    out = {}
    for v in range(first, first + videos):
        clips = []
        for c in range(clips_per_video):
            person = int(world.rng.integers(known)) if world.rng.random() < 0.7 else int(
                world.rng.integers(known, len(world.people)))
            emb = world.faces(person, faces_per_clip)
            clips.append(SyntheticClip(2.0 * c, 2.0 * c + 2.0, [SyntheticFace(2.0 * c + 0.25 * i, emb[i])
                                                                for i in range(faces_per_clip)]))
        out[f"video{v:05d}"] = clips
    return out


def bench_tagging(tmp: Path, rows: list) -> None:
    world = World(400)
    out, db = tmp / "tag_store", tmp / "tag.db"
    videos, per_video, faces = 100, 100, 10
    write_store(out, synthetic_videos(world, 0, videos, per_video, faces, known=100))
    with Gallery.open(db, create=True) as g:
        g.require_fingerprint(SYNTHETIC_FINGERPRINT)
        for p in range(100):
            g.put_source(f"person{p:03d}", f"/p/{p}", "photo",
                         [GalleryFace(e, (0, 0, 1, 1), 0.9, 20.0) for e in world.faces(p, 3)])
    options = TagOptions(threshold=0.45, margin=0.05, link=0.45)
    clips = videos * per_video
    report, s, cpu = timed(lambda: tag(out, db, options))
    rows.append(("tagging", f"from scratch: {clips:,} clips, {clips * faces:,} face rows", f"{clips / s:,.0f} clips/s",
                 f"{s:.2f} s (CPU {cpu:.2f} s: {clips / cpu:,.0f} clips/CPU-s); {report.named:,} named, "
                 f"{report.unknown:,} unknown, {report.clusters} unknown people"))
    write_store(out, synthetic_videos(world, videos, 1, per_video, faces, known=100))
    report, s, cpu = timed(lambda: tag(out, db, options))
    rows.append(("tagging", f"one new video ({per_video} clips)", f"{s:.2f} s",
                 f"CPU {cpu:.2f} s; {report.videos_tracked} video tracked, {report.rescored} tracks matched, "
                 f"unknown people clustered again"))
    with Gallery.open(db) as g:
        g.put_source("person100", "/p/100", "photo", [GalleryFace(e, (0, 0, 1, 1), 0.9, 20.0) for e in world.faces(100, 3)])
    report, s, cpu = timed(lambda: tag(out, db, options))
    rows.append(("tagging", "one new gallery person", f"{s:.2f} s",
                 f"CPU {cpu:.2f} s; {report.rescored:,} of {report.tracks:,} tracks matched again, "
                 f"{report.changed} clips changed"))
    report, s, cpu = timed(lambda: tag(out, db, options))
    rows.append(("tagging", "nothing changed", f"{s:.2f} s", f"CPU {cpu:.2f} s; {report.rescored} tracks matched"))


def bench_search(tmp: Path, rows: list, encoder: FaceEncoder | None, photo: Path | None) -> None:
    world = World(1000, seed=1)
    latencies = {}
    for n_faces in (10_000, 100_000):
        out = tmp / f"search_{n_faces}"
        per_clip, per_video = 10, 100
        n_videos = n_faces // (per_clip * per_video)
        write_store(out, synthetic_videos(world, 0, n_videos, per_video, per_clip, known=700))
        _, build, _ = timed(lambda: face_index(out))
        index, load, _ = timed(lambda: face_index(out))
        walls, cpus = [], []
        for q in world.faces(0, 21):
            _, wall, cpu = timed(lambda: np.argsort(-index.best_per_clip(index.scores(q)))[:20])
            walls.append(wall)
            cpus.append(cpu)
        query, query_cpu = float(np.median(walls[1:])), float(np.median(cpus[1:]))  # the first query pages the matrix in
        latencies[n_faces] = load + query
        rows.append(("search", f"{n_faces:,} face rows", f"{(load + query) * 1000:.1f} ms",
                     f"query {query * 1000:.2f} ms (CPU {query_cpu * 1000:.2f} ms; median of 20) + cached index "
                     f"load {load * 1000:.1f} ms; first build {build:.2f} s"))
    rows.append(("search", "growth 10,000 -> 100,000 rows", f"x{latencies[100_000] / latencies[10_000]:.1f}",
                 "index: numpy matrix products in blocks (exact cosine), memory-mapped cache"))
    if encoder is not None and photo is not None:
        image = cv2.imread(str(photo))
        encoder.faces([image])  # warm-up
        _, s, cpu = timed(lambda: [encoder.faces([image]) for _ in range(10)])
        rows.append(("search", "embedding the query photo", f"{s * 100:.0f} ms",
                     f"CPU {cpu * 100:.0f} ms; {encoder.fingerprint.describe()}"))


def bench_enrolment(tmp: Path, rows: list, media: Path, cfg: Config) -> FaceEncoder:
    people = tmp / "people"
    photos = 0
    for base in CALIBRATION_SETS:
        for person in sorted((media / base).iterdir()):
            (people / person.name).mkdir(parents=True, exist_ok=True)
            for p in sorted(person.iterdir()):
                (people / person.name / p.name).symlink_to(p)
                photos += 1
    encoder, load, load_cpu = timed(lambda: FaceEncoder(cfg))
    report, s, cpu = timed(lambda: enroll(people, tmp / "photos.db", cfg))
    rows.append(("enrolment", f"{photos} shared photos, {report.people} people", f"{photos / (s - load):.1f} photos/s",
                 f"{s:.2f} s incl. {load:.2f} s loading the models (CPU {cpu:.2f} s: "
                 f"{photos / (cpu - load_cpu):.1f} photos/CPU-s); {len(report.problems)} photos not used"))
    report, s, _ = timed(lambda: enroll(people, tmp / "photos.db", cfg))
    rows.append(("enrolment", "re-run, nothing new", f"{s:.2f} s", f"{report.unchanged} unchanged, incl. model loading"))
    with Gallery.open(tmp / "photos.db") as g:
        embeddings, names = g.face_embeddings()
    result = calibrate(embeddings, names)
    t = result.thresholds
    rows.append(("calibration", encoder.fingerprint.embedder_key, f"t={t.threshold:.3f} m={t.margin:.3f}",
                 f"TPIR {result.tpir:.1%} at FPIR {result.fpir:.1%} ({result.n_genuine}+{result.n_impostor} probes), "
                 f"rank-1 {result.rank1:.1%}"))
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights")
    parser.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    parser.add_argument("--face-backend", choices=["scrfd", "dlib"], default="scrfd")
    args = parser.parse_args()
    cfg = Config()
    cfg.run.weights_dir = str(args.weights)
    if args.face_backend == "dlib":
        cfg.faces.detector = cfg.faces.embedder = "dlib"
    rows: list[tuple[str, str, str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_identities_"))
    try:
        encoder = bench_enrolment(tmp, rows, args.media, cfg) if (args.media / "faces").is_dir() else None
        bench_tagging(tmp, rows)
        bench_search(tmp, rows, encoder, args.media / "faces/face_recognition_misc/lin-manuel-miranda.png")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    widths = [max(len(r[i]) for r in rows + [("part", "case", "result", "details")]) for i in range(4)]
    for r in [("part", "case", "result", "details"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    main()
