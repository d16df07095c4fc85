"""Head detectors and head/body embeddings on the shared photos and video frames.

    python benchmarks/bench_heads.py [--weights DIR] [--repeat 3]

1. Heads found against heads present, per head detector choice, on photos and video
   frames whose heads were counted by looking at them, and milliseconds per frame (the
   median of `--repeat` runs per image, after one warm-up; on shared cores, compare
   ratios).
2. The head embedding (OSNet on the head crop) and, for comparison, a colour histogram
   of the same crop (the simplest baseline) and the face embedding: the same person across
   photos (different days, clothes, hair) against different people, on celebrity5_train
   and deepface_ids: mean cosine, margin, ROC AUC, leave-one-out 1-NN accuracy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("VIDPIPE_SHARED", REPO.parent / "shared"))

from vidpipe.backends.base import HEAD, crop  # noqa: E402
from vidpipe.config import Config  # noqa: E402
from vidpipe.pipeline.runner import config_backends  # noqa: E402
from vidpipe.stages.major_character import judge_frames  # noqa: E402

# (what, file under media/, time in s for videos or None, heads present: counted by looking)
COUNTED = [
    ("couple", "faces/multi_face/couple.jpg", None, 2),
    ("selfie", "faces/multi_face/selfie-many-people.jpg", None, 7),
    ("two people", "faces/face_recognition_misc/two_people.jpg", None, 2),
    ("Lin-Manuel Miranda", "faces/face_recognition_misc/lin-manuel-miranda.png", None, 1),
    ("Hamilton wide stage", "videos/short_hamilton_clip.mp4", 1.2, 3),  # him, the pianist, a back of a head
    ("Hamilton medium shot", "videos/short_hamilton_clip.mp4", 6.0, 1),
    ("Hamilton audience", "videos/short_hamilton_clip.mp4", 9.0, 7),
    ("dancer", "videos/mgt_dancer.avi", 20.0, 1),
    ("dancer", "videos/mgt_dancer.avi", 40.0, 1),
    ("vtest street", "videos/vtest_opencv_reencoded.avi", 5.0, 6),
    ("vtest street", "videos/vtest_opencv_reencoded.avi", 25.0, 7),
    ("vtest street", "videos/vtest_opencv_reencoded.avi", 50.0, 4),
    ("vtest street", "videos/vtest_opencv_reencoded.avi", 70.0, 8),
]

CHOICES = {  # label -> config settings
    "wholebody (GPL)": {"major_character.detector": "wholebody"},
    "person_face: scrfd + yolox (auto)": {"major_character.detector": "person_face"},
    "person_face: scrfd + scrfd_person": {"major_character.detector": "person_face", "bodies.detector": "scrfd_person"},
    "person_face: dlib + hog (no weights)": {"major_character.detector": "person_face", "faces.detector": "dlib",
                                             "bodies.detector": "hog"},
}


def analysis_size(img: np.ndarray, max_side: int = 640) -> np.ndarray:
    scale = min(1.0, max_side / max(img.shape[:2]))
    return img if scale >= 1 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def load(rel: str, t: float | None) -> np.ndarray:
    path = SHARED / "media" / rel
    if t is None:
        return analysis_size(cv2.imread(str(path)))
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if frame.time >= t:
                return analysis_size(frame.to_ndarray(format="bgr24"))
    raise ValueError(f"{rel} has no frame at {t} s")


def backends(weights: str, settings: dict):
    cfg = Config()
    cfg.set("run.weights_dir", weights)
    for k, v in settings.items():
        cfg.set(k, v)
    return config_backends(cfg)


def head_table(weights: str, repeat: int) -> None:
    images = [load(rel, t) for _, rel, t, _ in COUNTED]
    present = [n for *_, n in COUNTED]
    rows = {}
    for label, settings in CHOICES.items():
        detector = backends(weights, settings).get("head_detector")
        detector.detect(images[:1])  # warm-up
        found, ms = [], []
        for img in images:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                heads = detector.detect([img]).of_kind(HEAD)
                times.append(time.perf_counter() - t0)
            found.append(len(heads))
            ms.append(1000 * statistics.median(times))
        rows[label] = (found, ms)
    print("Heads found / present per image (counted by looking), and ms per frame:\n")
    names = [f"{w}{'' if t is None else f' {t:g}s'}" for w, _, t, _ in COUNTED]
    print("| image | present | " + " | ".join(rows) + " |")
    print("|---|---:|" + "---:|" * len(rows))
    for i, name in enumerate(names):
        print(f"| {name} | {present[i]} | " + " | ".join(str(found[i]) for found, _ in rows.values()) + " |")
    print(f"| **total** | {sum(present)} | " + " | ".join(str(sum(f)) for f, _ in rows.values()) + " |")
    print("| sum of abs(found - present) | | " + " | ".join(
        str(sum(abs(a - b) for a, b in zip(f, present))) for f, _ in rows.values()) + " |")
    print("| ms per frame (mean) | | " + " | ".join(f"{np.mean(m):.0f}" for _, m in rows.values()) + " |")


def colour_histogram(crops: list[np.ndarray]) -> np.ndarray:
    """Hue-saturation histogram (16x8) of each crop: the simplest appearance baseline."""
    out = []
    for c in crops:
        hsv = cv2.cvtColor(c, cv2.COLOR_BGR2HSV)
        out.append(cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel())
    return np.asarray(out, np.float32)


def scores(emb: np.ndarray, ids: list[str]) -> str:
    from sklearn.metrics import roc_auc_score

    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    ids_arr = np.array(ids)
    iu = np.triu_indices(len(ids), 1)
    same = (ids_arr[:, None] == ids_arr[None, :])[iu]
    s = sim[iu]
    np.fill_diagonal(sim, -np.inf)
    nn = (ids_arr[sim.argmax(1)] == ids_arr).mean()
    return (f"same {s[same].mean():.3f} | different {s[~same].mean():.3f} | margin {s[same].mean() - s[~same].mean():.3f} "
            f"| AUC {roc_auc_score(same, s):.3f} | 1-NN {nn:.1%}")


def embedding_table(weights: str) -> None:
    b = backends(weights, {})
    detector, heads_net = b.get("head_detector"), b.get("head_embedder")
    faces_net = b.get("face_embedder")
    head_crops, face_rows, images, ids = [], [], [], []
    for folder in ("celebrity5_train", "deepface_ids"):
        for person in sorted((SHARED / "media/faces" / folder).iterdir()):
            for photo in sorted(person.iterdir()):
                img = cv2.imread(str(photo))
                if img is None:
                    continue
                img = analysis_size(img)
                found = detector.detect([img])
                heads = found.of_kind(HEAD)
                valid, major = judge_frames(heads, 1, 3.0)
                faces = found[found.kind == 0]
                if not valid[0] or len(faces) == 0:
                    continue  # no major character, or no face to compare with
                head = heads.xyxy[major][0]
                head_crops.append(crop(img, head, 0.1))
                centre = (faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2
                inside = ((centre >= head[:2]) & (centre <= head[2:])).all(1)
                face_rows.append(faces[np.flatnonzero(inside)[:1] if inside.any() else [int(np.argmax(faces.area))]])
                images.append(img)
                ids.append(f"{folder}/{person.name}")
    face_emb = np.concatenate([faces_net.embed([img], f.shifted(0)) for img, f in zip(images, face_rows)])
    print(f"\nSame person across photos vs different people: {len(ids)} photos with one major character, "
          f"{len(set(ids))} people (celebrity5_train, deepface_ids); cosine similarity:\n")
    print(f"- head, OSNet-x0.25 on the head crop (default): {scores(heads_net.embed(head_crops), ids)}")
    print(f"- head, hue-saturation histogram of the same crop (baseline): {scores(colour_histogram(head_crops), ids)}")
    print(f"- face, {faces_net.name} ({faces_net.weight_files[0].name if faces_net.weight_files else ''}): "
          f"{scores(face_emb, ids)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "weights"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    head_table(args.weights, args.repeat)
    embedding_table(args.weights)


if __name__ == "__main__":
    main()
