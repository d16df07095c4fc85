"""A real store for the review and export tests, made from the shared photos and videos:
a slideshow of celebrity photos (one 1.5 s shot per photo, so one clip each) plus the
Hamilton clip, run through the major-character and faces stages, a gallery enrolled from
other photos of the same people, and the store tagged."""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

import vidpipe
from vidpipe.config import Config
from vidpipe.identities import enroll, tag

CELEBRITIES = "media/faces/celebrity5_train"
HAMILTON = "media/videos/short_hamilton_clip.mp4"
PEOPLE = ("ben_afflek", "madonna", "jerry_seinfeld")
ENROLLED = 3  # photos per person in the gallery; the next ones go into the slideshow
IN_VIDEO = 5
SLIDESHOW = "celebrities.mp4"


def config(shared: Path) -> Config:
    cfg = Config()
    cfg.run.weights_dir = str(shared / "weights")
    cfg.run.device = "cpu"
    cfg.faces.detector, cfg.faces.embedder = "scrfd", "arcface"
    cfg.pipeline.stages = ("major_character", "faces")
    cfg.sampling.fps = 2.0
    return cfg


def slideshow(path: Path, images: list[np.ndarray], seconds: float = 1.5, fps: int = 10,
              size: tuple[int, int] = (640, 480)) -> Path:
    """One shot per image (letterboxed), hard cuts between them, H.264 (browsers play it)."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        n = 0
        for img in images:
            scale = min(w / img.shape[1], h / img.shape[0])
            small = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            canvas = np.zeros((h, w, 3), np.uint8)
            y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
            canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
                frame.pts, frame.time_base = n, Fraction(1, fps)
                out.mux(stream.encode(frame))
                n += 1
        out.mux(stream.encode(None))
    return path


def build(shared: Path, root: Path) -> tuple[Path, Path]:
    """(store, gallery) under `root`: enrolled, run and tagged."""
    people = root / "people"
    images, who = [], []
    for person in PEOPLE:
        photos = sorted((shared / CELEBRITIES / person).iterdir())
        (people / person).mkdir(parents=True)
        for p in photos[:ENROLLED]:
            (people / person / p.name).symlink_to(p)
        images += [cv2.imread(str(p)) for p in photos[ENROLLED : ENROLLED + IN_VIDEO]]
        who += [person] * IN_VIDEO
    order = np.random.default_rng(0).permutation(len(images))  # people interleaved, as in a show
    videos = root / "videos"
    videos.mkdir()
    slideshow(videos / SLIDESHOW, [images[i] for i in order])
    (root / "slides.json").write_text(json.dumps([who[i] for i in order]))
    (videos / "hamilton.mp4").symlink_to(shared / HAMILTON)
    cfg = config(shared)
    out, db = root / "store", root / "gallery.db"
    enroll(people, db, copy.deepcopy(cfg))
    assert vidpipe.run(videos, out, cfg).exit_code == 0
    tag(out, db)
    return out, db


def slide_people(out: Path) -> dict[str, str]:
    """{clip_id: the person on that slide} for the kept clips of the slideshow."""
    who = json.loads((out.parent / "slides.json").read_text())
    videos = vidpipe.read_table(out, "videos")
    video = videos.video_id[videos.path.str.endswith(SLIDESHOW)].item()
    clips = vidpipe.read_table(out, "clips")
    clips = clips[(clips.video_id == video) & (clips.status == "ok")]
    return {c: who[k] for c, k in zip(clips.clip_id, clips.shot_index)}


# ---------------------------------------------------------------- a synthetic store (no ../shared)


def synthetic_store(root: Path, people: dict[str, int], unknown: int = 0, audio: bool = True, dim: int = 128,
                    seed: int = 0, codec: str = "libx264", suffix: str = ".mp4") -> tuple[Path, Path]:
    """(store, gallery): one real video of one 1 s shot per clip, and the store's tables
    written as `vidpipe run` + `vidpipe tag` write them: `people[name]` clips tagged as
    `name` by the gallery (scores 0.50-0.95), `unknown` clips nobody was recognised in,
    all of them in one unknown-people cluster. Faces, heads, bodies (and audio) rows carry
    per-person embeddings. The gallery holds every person."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synth import make_video
    from vidpipe.identities import Gallery
    from vidpipe.identities.cluster import CLUSTERS_SCHEMA, clusters_path
    from vidpipe.identities.gallery import GalleryFace
    from vidpipe.identities.table import write_identities
    from vidpipe.store import CLIPS_SCHEMA, VIDEOS_SCHEMA, known_schemas, to_arrow
    from vidpipe.video import content_id

    rng = np.random.default_rng(seed)
    names = [n for n, k in people.items() for _ in range(k)] + ["?"] * unknown
    order = rng.permutation(len(names))
    names = [names[i] for i in order]
    root.mkdir(parents=True, exist_ok=True)
    video = make_video(root / f"show{suffix}", [1.0] * len(names), fps=10, codec=codec)
    vid = content_id(video)
    out = root / "store"
    for table in ("videos", "clips", "faces", "heads", "bodies", *(["audio"] if audio else [])):
        (out / table).mkdir(parents=True)
    to = {n: rng.standard_normal(dim) for n in [*people, "?"]}
    pq.write_table(to_arrow([{"video_id": vid, "path": str(video), "size_bytes": video.stat().st_size,
                              "duration_s": float(len(names)), "fps": 10.0, "width": 320, "height": 180,
                              "codec": "h264" if codec == "libx264" else codec, "status": "ok", "start_time_s": 0.0,
                              "video_start_s": 0.0}], VIDEOS_SCHEMA), out / "videos" / f"{vid}.parquet")
    clips, faces, heads, bodies, voices, tags, cluster = [], [], [], [], [], [], []
    schemas = known_schemas()
    for k, name in enumerate(names):
        cid = f"{vid}-{k:04d}"
        clips.append({"clip_id": cid, "video_id": vid, "shot_index": k, "start_s": float(k), "end_s": k + 1.0,
                      "duration_s": 1.0, "status": "ok", "n_frames_sampled": 4})
        for j in range(4):
            e = to[name] + 0.5 * rng.standard_normal(dim)
            e = (e / np.linalg.norm(e)).astype(np.float32)
            row = {"clip_id": cid, "video_id": vid, "frame_index": 10 * k + 2 * j, "time_s": k + 0.2 * j,
                   "bbox": [-3.0 + j, 20.0, 120.0, 150.0], "det_score": 0.9, "embedding": e.tolist()}
            faces.append({**row, "landmarks": [0.0] * 10, "quality": 17.0 + j, "major": True, "rank": 3 - j, "selected": True})
            heads.append(row)
            bodies.append(row)
        if audio:
            voices.append({"clip_id": cid, "video_id": vid, "speech_ratio": 0.8, "embedding": to[name][:64].tolist(),
                           "embedded_over": "speech"})
        if name == "?":
            tags.append((cid, "unknown", 0.1))
            cluster.append({"cluster_id": 1, "clip_id": cid, "video_id": vid, "track": 0, "representative": False})
        else:
            tags.append((cid, name, float(rng.uniform(0.5, 0.95))))
    pq.write_table(to_arrow(clips, schemas["clips"] if "n_faces" in schemas["clips"].names else CLIPS_SCHEMA),
                   out / "clips" / f"{vid}.parquet")
    faces.sort(key=lambda r: (r["clip_id"], r["rank"]))  # best first, as the faces stage writes them
    for table, rows in (("faces", faces), ("heads", heads), ("bodies", bodies)):
        pq.write_table(to_arrow(rows, schemas[table]), out / table / f"{vid}.parquet")
    if audio:  # the audio stage's columns (issue #7), those the export reads
        schema = pa.schema([("clip_id", pa.string()), ("video_id", pa.string()), ("speech_ratio", pa.float32()),
                            ("embedding", pa.list_(pa.float32())), ("embedded_over", pa.string())])
        pq.write_table(pa.Table.from_pylist(voices, schema=schema), out / "audio" / f"{vid}.parquet")
    write_identities(out, "tags", pd.DataFrame({"clip_id": [t[0] for t in tags], "identity": [t[1] for t in tags],
                                                "score": [t[2] for t in tags], "source": "gallery", "track": None,
                                                "start_s": None, "end_s": None}))
    if cluster:
        clusters_path(out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(cluster, schema=CLUSTERS_SCHEMA), clusters_path(out))
    db = root / "gallery.db"
    with Gallery.open(db, create=True) as g:
        for name in people:
            g.put_source(name, f"/photos/{name}.jpg", "photo",
                         [GalleryFace((to[name] / np.linalg.norm(to[name])).astype(np.float32), (0, 0, 10, 10), 0.9, 20.0)])
    return out, db

