"""A real store for the review and export tests, made from the shared photos and videos:
a slideshow of celebrity photos (one 1.5 s shot per photo, so one clip each) plus the
Hamilton clip, run through the major-character and faces stages, a gallery enrolled from
other photos of the same people, and the store tagged."""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

import vidpipe
from vidpipe.config import Config
from vidpipe.identities import enroll, tag

CELEBRITIES = "media/faces/celebrity5_train"
HAMILTON = "media/videos/short_hamilton_clip.mp4"
PEOPLE = ("ben_afflek", "madonna", "jerry_seinfeld")
ENROLLED = 3  # photos per person in the gallery; the next ones go into the slideshow
IN_VIDEO = 5


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
    images = []
    for person in PEOPLE:
        photos = sorted((shared / CELEBRITIES / person).iterdir())
        (people / person).mkdir(parents=True)
        for p in photos[:ENROLLED]:
            (people / person / p.name).symlink_to(p)
        images += [cv2.imread(str(p)) for p in photos[ENROLLED : ENROLLED + IN_VIDEO]]
    order = np.random.default_rng(0).permutation(len(images))  # people interleaved, as in a show
    videos = root / "videos"
    videos.mkdir()
    slideshow(videos / "celebrities.mp4", [images[i] for i in order])
    (videos / "hamilton.mp4").symlink_to(shared / HAMILTON)
    cfg = config(shared)
    out, db = root / "store", root / "gallery.db"
    enroll(people, db, copy.deepcopy(cfg))
    assert vidpipe.run(videos, out, cfg).exit_code == 0
    tag(out, db)
    return out, db
