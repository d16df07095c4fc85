#!/usr/bin/env python
"""Accuracy benchmarks of the fusion model: does training beat plain cosine matching on clips
it has not seen, at which sizes, and where does each model break?

    python benchmarks/bench_fusion.py generate --size large         # make and convert a set only
    python benchmarks/bench_fusion.py adversarial --size small      # every arch × (face, all), ~30 min
    python benchmarks/bench_fusion.py adversarial --size large      # 20,000 training clips, hours on 2 cores
    python benchmarks/bench_fusion.py knobs                          # the generator's knobs, one at a time
    python benchmarks/bench_fusion.py ablation                       # which training changes matter
    python benchmarks/bench_fusion.py real                           # real face embeddings (../shared)

Data: the adversarial SYNTHETIC generator (vidpipe/models/synthetic.py) in the iQIYI-VID-2019
file layout, read through the same converter as the real release. Every model is trained
with the CLI's defaults (``--recipe default``) unless the table says otherwise; mAP@100 is
on the generator's own val split (distractor clips included), which training never sees.
Times: wall and CPU seconds of training (CPU = all threads). Tables go to stdout as
markdown, progress to stderr. ``bench_fusion_speed.py`` and ``bench_fusion_memory.py``
measure speed and memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve on shared cores

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vidpipe.eval.metrics import scores_map  # noqa: E402
from vidpipe.models.config import PROTOTYPE, ModelConfig, TrainConfig, recipe_configs  # noqa: E402
from vidpipe.models.data import ClipSet, load_iqiyi, load_store  # noqa: E402
from vidpipe.models.infer import FusionModel  # noqa: E402
from vidpipe.models.net import resolve_arch  # noqa: E402
from vidpipe.models.prototype import PrototypeModel  # noqa: E402
from vidpipe.models.synthetic import SyntheticSpec, sized_spec, write_synthetic_iqiyi  # noqa: E402
from vidpipe.models.train import train  # noqa: E402

ARCHS = ["prototype", "avg", "iqiyi", "famf", "famf-mf", "famf-fa", "ghostvlad", "nextvlad"]
ALL = ["face", "head", "body", "audio"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Fit:
    map: float
    wall_s: float
    cpu_s: float
    epochs: int = 0
    kept: int = 0


def fit(train_set: ClipSet, val: ClipSet, arch: str, modalities: list[str], args: argparse.Namespace,
        train_overrides: dict | None = None, model_overrides: dict | None = None, recipe: str = "default") -> Fit:
    """Train ``arch`` on ``train_set`` (the CLI's defaults plus overrides), score ``val``."""
    train_set, val = train_set.select_modalities(modalities), val.select_modalities(modalities)
    wall, cpu = time.perf_counter(), time.process_time()
    if arch == PROTOTYPE:
        model = PrototypeModel.fit(train_set, modalities)
        scores = model.scores(val)
        return Fit(scores_map(scores, val.clip_ids, model.classes, val.labels), time.perf_counter() - wall,
                   time.process_time() - cpu)
    agg, fus = resolve_arch(arch)
    model_kw, train_kw = recipe_configs(recipe, agg, model_overrides, {"seed": args.seed, "device": args.device,
                                                                       **(train_overrides or {})})
    out = Path(tempfile.mkdtemp(prefix="vidpipe_bench_model_"))
    try:
        result = train(train_set, ModelConfig(arch=arch, aggregation=agg, fusion=fus, **model_kw),
                       TrainConfig(**train_kw), out, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        model = FusionModel.load(out, args.device)
        scores = model.scores(val, TrainConfig(**train_kw).test_frames)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return Fit(scores_map(scores, val.clip_ids, model.classes, val.labels), wall, cpu, len(result.history[0]),
               result.best_epochs[0])


def dataset(spec: SyntheticSpec, args: argparse.Namespace) -> tuple[ClipSet, ClipSet]:
    """The SYNTHETIC set of ``spec`` (generated once under --data-root) as (train, val)."""
    key = "_".join(f"{f.name}={getattr(spec, f.name)}" for f in dataclasses.fields(spec)
                   if getattr(spec, f.name) != getattr(SyntheticSpec(), f.name))
    root = Path(args.data_root) / f"adversarial_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if not (root / "SYNTHETIC.txt").is_file():
        log(f"generating {spec.identities} identities × {spec.train_clips} training clips ({key or 'defaults'}) in {root} …")
        write_synthetic_iqiyi(root, spec)
    return load_iqiyi(root, "train", progress=True), load_iqiyi(root, "val")


def describe(train_set: ClipSet, val: ClipSet) -> str:
    ids = len({label for label in val.labels if label != "0"})
    noise = sum(label == "0" for label in val.labels)
    faceless = int((~val.banks["face"].present).sum())
    rows = int(train_set.banks["face"].count.sum())
    return (f"{len(train_set)} training clips ({rows:,} face rows), val {len(val)} clips of {ids} identities plus "
            f"{noise} distractor clips, {faceless} val clips without a face")


# ---------------------------------------------------------------- adversarial table

def generate(args: argparse.Namespace) -> None:
    """Only make (and convert) the set of --size, e.g. ahead of a long run."""
    print(describe(*dataset(sized_spec(args.size, seed=args.seed), args)))


def adversarial(args: argparse.Namespace) -> None:
    spec = sized_spec(args.size, seed=args.seed)
    train_set, val = dataset(spec, args)
    archs = args.archs.split(",") if args.archs else ARCHS
    print(f"\n### Adversarial SYNTHETIC set, {args.size}: {describe(train_set, val)}\n")
    capped = {"epochs": args.epochs} if args.epochs else {}
    if capped:
        print(f"(at most {args.epochs} epochs instead of the recipe's 60: the time this machine had)\n")
    print("| arch | face only: val mAP | all modalities: val mAP | face only: train s (CPU s) | "
          "all: train s (CPU s) | epochs run / kept (all) |")
    print("|---|---|---|---|---|---|")
    for arch in archs:
        skip = Fit(float("nan"), 0.0, 0.0)
        face = fit(train_set, val, arch, ["face"], args, capped) if args.modalities in ("both", "face") else skip
        both = fit(train_set, val, arch, ALL, args, capped) if args.modalities in ("both", "all") else skip
        log(f"  {arch}: face {face.map:.4f} ({face.wall_s:.0f} s), all {both.map:.4f} ({both.wall_s:.0f} s)")
        print(f"| {arch} | {face.map:.4f} | {both.map:.4f} | {face.wall_s:.0f} ({face.cpu_s:.0f}) | "
              f"{both.wall_s:.0f} ({both.cpu_s:.0f}) | {both.epochs} / {both.kept} |", flush=True)
    for arch in args.paper.split(",") if args.paper else []:
        paper = fit(train_set, val, arch, ALL, args, recipe="paper")
        print(f"| {arch}, --recipe paper | – | {paper.map:.4f} | – | {paper.wall_s:.0f} ({paper.cpu_s:.0f}) | "
              f"{paper.epochs} / {paper.kept} |", flush=True)


# ---------------------------------------------------------------- knobs

KNOBS = {
    "face_noise": [0.0, 1.3, 2.5, 4.0],
    "body_uniqueness": [0.0, 1.0],
    "faceless": [0.0, 0.15, 0.4],
    "audio_mismatch": [0.0, 0.5, 0.9],
}
KNOB_MODELS = [("prototype", ["face"]), ("prototype", ALL), ("avg", ALL), ("famf", ["face"]), ("famf", ALL)]


def knobs(args: argparse.Namespace) -> None:
    print("\n### Where each model breaks: one knob of the small set at a time (val mAP@100)\n")
    print("| knob = value | " + " | ".join(f"{a} ({'face' if m == ['face'] else 'all'})" for a, m in KNOB_MODELS) + " |")
    print("|---|" + "---|" * len(KNOB_MODELS))
    chosen = dict(KNOBS)
    if args.knob:  # e.g. --knob face_noise=0,4 --knob faceless=0.4: only these
        chosen = {}
        for item in args.knob:
            name, _, values = item.partition("=")
            if name not in KNOBS:
                raise SystemExit(f"unknown knob {name!r}; knobs: {', '.join(KNOBS)}")
            chosen[name] = [type(KNOBS[name][0])(v) for v in values.split(",")]
    for knob, values in chosen.items():
        for value in values:
            train_set, val = dataset(sized_spec("small", seed=args.seed, **{knob: value}), args)
            cells = [fit(train_set, val, a, m, args).map for a, m in KNOB_MODELS]
            print(f"| {knob} = {value} | " + " | ".join(f"{c:.4f}" for c in cells) + " |", flush=True)


# ---------------------------------------------------------------- ablation

ABLATION = [
    ("default recipe", {}, {}),
    ("no early stopping (60 epochs, last kept)", dict(patience=0), {}),
    ("no modality dropout", dict(modality_dropout=0.0), {}),
    ("no weight decay", dict(weight_decay=0.0), {}),
    ("no dropout", {}, dict(dropout=0.0)),
    ("no label smoothing", dict(label_smoothing=0.0), {}),
    ("batch 4096 (one step per epoch)", dict(batch_size=4096), {}),
    ("no per-modality scaling", dict(normalize=False), {}),
    ("hidden 4096, fusion dim 512", {}, dict(hidden=4096, fusion_dim=512)),
    ("frames from the best 32 only", dict(max_frames=32), {}),
]


def _seeded(train_set: ClipSet, val: ClipSet, arch: str, args: argparse.Namespace, **kw) -> str:
    """mean (min–max) val mAP and mean train seconds over --seeds training seeds."""
    fits = [fit(train_set, val, arch, ALL, argparse.Namespace(**{**vars(args), "seed": seed}), **kw)
            for seed in range(args.seeds)]
    maps = [f.map for f in fits]
    spread = f" ({min(maps):.3f}–{max(maps):.3f})" if len(maps) > 1 else ""
    return f"{np.mean(maps):.4f}{spread}, {np.mean([f.wall_s for f in fits]):.0f} s"


def ablation(args: argparse.Namespace) -> None:
    train_set, val = dataset(sized_spec(args.size), args)
    archs = args.archs.split(",") if args.archs else ["famf", "iqiyi"]
    print(f"\n### Ablation on the {args.size} set (all modalities; val mAP@100, mean (min–max) over "
          f"{args.seeds} training seed(s); mean train s)\n")
    print("| change | " + " | ".join(archs) + " |")
    print("|---|" + "---|" * len(archs))
    for name, train_kw, model_kw in ABLATION:
        cells = [_seeded(train_set, val, a, args, train_overrides=train_kw, model_overrides=model_kw) for a in archs]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    cells = [_seeded(train_set, val, a, args, recipe="paper") for a in archs]
    print("| --recipe paper (FAMF §4.3) | " + " | ".join(cells) + " |", flush=True)
    base = fit(train_set, val, PROTOTYPE, ["face"], args)
    print(f"| prototype (face), for reference | {base.map:.4f} |" + " |" * (len(archs) - 1))


# ---------------------------------------------------------------- real embeddings

def _degrade(crop: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    import cv2

    out = crop.copy()
    if "blur" in kind:
        k = int(rng.choice([9, 15, 21]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    if "down" in kind:
        s = int(rng.choice([10, 14, 20]))
        out = cv2.resize(cv2.resize(out, (s, s), interpolation=cv2.INTER_AREA), (112, 112))
    if "occl" in kind:
        h = int(rng.integers(35, 60))
        y = int(rng.integers(0, 112 - h))
        out[y : y + h, :] = out[y : y + h, :] // 6  # a dark band (hand, scarf, shadow)
    return out


def build_real_store(shared: Path, out: Path, rng: np.random.Generator) -> tuple[Path, dict[str, str]]:
    """Embed degraded face photos, assemble clips, write a feature store + the training labels;
    returns the store and every clip's label."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidpipe.backends.arcface import align_face
    from vidpipe.config import Config
    from vidpipe.pipeline.runner import config_backends

    faces_dir = shared / "media" / "faces"
    cfg = Config()
    cfg.set("run.device", "cpu")
    cfg.set("run.weights_dir", str(shared / "weights"))
    cfg.set("faces.detector", "scrfd")
    cfg.set("faces.embedder", "arcface")
    backends = config_backends(cfg)  # the same detector, alignment and embedder as `vidpipe run`
    detector, rec = backends.get("face_detector"), backends.get("face_embedder").model
    people = {}
    for folder in sorted([*faces_dir.glob("celebrity5_train/*"), *faces_dir.glob("deepface_ids/*")]):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(photos) >= 4:
            people[folder.name] = photos
    distractor_photos = sorted([*faces_dir.glob("face_recognition_misc/*"), *faces_dir.glob("multi_face/*"),
                                *faces_dir.glob("face_recognition_knn/test/*")])
    kinds = ["clean", "blur", "down", "occl", "blur+down", "down+occl", "blur+occl"]

    def crops_of(path: Path, all_faces: bool) -> list[np.ndarray]:
        img = cv2.imread(str(path))
        if img is None:
            return []
        det = detector.detect([img])
        if len(det) == 0:
            return []
        order = np.argsort(-det.area)
        return [align_face(img, det.data["landmarks"][i]) for i in (order if all_faces else order[:1])]

    frames: list[tuple[str, int, str]] = []  # (identity or "0", photo id, kind)
    images: list[np.ndarray] = []
    photo_of: dict[str, list[int]] = {}
    pid = 0
    for person, photos in [*people.items(), ("0", distractor_photos)]:
        for photo in photos:
            crops = crops_of(photo, all_faces=person == "0")
            for crop in crops:
                photo_of.setdefault(person, []).append(pid)
                for kind in kinds:
                    frames.append((person, pid, kind))
                    images.append(_degrade(crop, kind, rng))
                pid += 1
    feats = np.concatenate([rec.get_feat(images[i : i + 64]) for i in range(0, len(images), 64)])
    quality = np.linalg.norm(feats, axis=1)
    emb = feats / quality[:, None]
    by_photo: dict[int, list[int]] = {}
    degraded: dict[int, list[int]] = {}
    for row, (_, p, kind) in enumerate(frames):
        by_photo.setdefault(p, []).append(row)
        if kind != "clean":
            degraded.setdefault(p, []).append(row)

    clips, labels = [], {}
    def make_clips(person: str, photo_ids: list[int], n: int, split: str) -> None:
        for _ in range(n):
            k = int(rng.integers(2, 6))
            pool = by_photo if split == "train" else degraded  # test clips: degraded frames only
            rows = [int(rng.choice(pool[int(rng.choice(photo_ids))])) for _ in range(k)]
            cid = f"REAL_{split}_{len(clips):05d}"
            clips.append((cid, sorted(set(rows), key=lambda r: -quality[r])))
            labels[cid] = person

    for person, pids in photo_of.items():
        pids = list(rng.permutation(pids))
        half = max(1, len(pids) // 2)
        if person == "0":
            make_clips("0", pids[:half], 20, "train")
            make_clips("0", pids[half:] or pids, 40, "test")
        else:
            make_clips(person, pids[:half], 30, "train")
            make_clips(person, pids[half:], 10, "test")
    rows = [(cid, r, rank) for cid, rs in clips for rank, r in enumerate(rs)]
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "faces").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"clip_id": [c for c, _ in clips], "video_id": ["faces"] * len(clips),
                             "status": ["ok"] * len(clips), "reason": pa.nulls(len(clips), pa.string())}),
                   out / "clips" / "faces.parquet")
    pq.write_table(pa.table({
        "clip_id": [c for c, _, _ in rows],
        "frame_index": pa.array([r for _, r, _ in rows], pa.int32()),
        "quality": pa.array([quality[r] for _, r, _ in rows], pa.float32()),
        "embedding": pa.array([emb[r] for _, r, _ in rows], pa.list_(pa.float32())),
        "rank": pa.array([k for _, _, k in rows], pa.int32()),
    }), out / "faces" / "faces.parquet")
    with open(out / "labels.csv", "w") as f:
        f.write("clip_id,identity\n" + "".join(f"{c},{i}\n" for c, i in labels.items() if "_train_" in c))
    log(f"  real: {len(people)} identities, {pid} face photos × {len(kinds)} degradations, {len(clips)} clips")
    return out, labels


def real_part(args: argparse.Namespace, workdir: Path) -> None:
    shared = Path(os.environ.get("VIDPIPE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    if not (shared / "media" / "faces").is_dir():
        print("\n### Real embeddings\n\nskipped: ../shared/media/faces not available")
        return
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    store, labels = build_real_store(shared, workdir / "real_store", rng)
    embed_s = time.perf_counter() - t
    data = load_store(store, labels)
    is_train = np.array(["_train_" in c for c in data.clip_ids])
    train_set, test_set = data.subset(np.flatnonzero(is_train)), data.subset(np.flatnonzero(~is_train))
    print("\n### Real embeddings (shared face photos, SCRFD-500M + MobileFaceNet-128, degraded)\n")
    print(f"{len(set(test_set.labels) - {'0'})} identities, {len(train_set)} train / {len(test_set)} test clips "
          f"(2–5 frames each, test frames all degraded, distractor clips included), embedding took {embed_s:.0f} s.\n")
    print("| method | mAP@100 | train s |\n|---|---|---|")
    for arch in ("prototype", "avg", "famf"):
        r = fit(train_set, test_set, arch, ["face"], args, dict(frames=8, test_frames=8))
        print(f"| {arch} (face) | {r.map:.4f} | {r.wall_s:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("part", choices=["generate", "adversarial", "knobs", "ablation", "real"])
    p.add_argument("--size", choices=["small", "large"], default="small")
    p.add_argument("--archs", help="comma list (default: every architecture of the table)")
    p.add_argument("--paper", default="famf,iqiyi", help="archs also trained with --recipe paper ('' = none)")
    p.add_argument("--modalities", choices=["both", "face", "all"], default="both",
                   help="adversarial: face only, all modalities, or both columns (default)")
    p.add_argument("--epochs", type=int, help="adversarial: at most this many epochs (default: the recipe's)")
    p.add_argument("--knob", action="append", help="knobs: NAME=V1,V2 (repeatable; default: every knob's values)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="ablation: training seeds per cell")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-root", default=str(Path(tempfile.gettempdir()) / "vidpipe_bench_fusion"),
                   help="where generated SYNTHETIC sets are kept between runs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    if args.part == "real":
        with tempfile.TemporaryDirectory(prefix="vidpipe_bench_real_") as tmp:
            real_part(args, Path(tmp))
    else:
        {"generate": generate, "adversarial": adversarial, "knobs": knobs, "ablation": ablation}[args.part](args)
    log(f"done in {time.perf_counter() - t:.0f} s (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
