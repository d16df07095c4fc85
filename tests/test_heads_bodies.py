"""Head and body embeddings of the major character (iQIYI-VID §3.3, §5.1) on real video."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import vidpipe
from excerpts import cut
from vidpipe.backends.base import PERSON, Detections, crop
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline.runner import config_backends
from vidpipe.stages.bodies import pair_bodies

DIM = 512  # OSNet-x0.25


def config(shared, **settings) -> Config:
    cfg = Config()
    cfg.set("run.weights_dir", str(shared / "weights"))
    for key, value in settings.items():
        cfg.set(key, value)
    return cfg


@pytest.fixture(scope="module")
def dancer(shared, tmp_path_factory):
    """20 s of mgt_dancer.avi (one dancer on a blue stage; the whole file is one 63 s shot,
    too long for a clip), cut by stream copy, through every default stage."""
    d = tmp_path_factory.mktemp("dancer")
    video = cut(shared / "media/videos/mgt_dancer.avi", d / "dancer20.avi", 20.0, 20.0)
    report = vidpipe.run(video, d / "out", config(shared, **{"sampling.fps": 2.0}))  # 40 frames: keeps the suite fast
    assert report.exit_code == 0
    tables = {t: vidpipe.read_table(d / "out", t) for t in ("clips", "heads", "bodies", "faces")}
    return d / "out", tables


def test_dancer_is_kept_with_head_and_body_embeddings_on_most_frames(dancer):
    out, t = dancer
    clips = t["clips"]
    assert len(clips) == 1 and clips.status.iloc[0] == "ok" and clips.valid_frame_ratio.iloc[0] >= 0.8
    n = int(clips.n_frames_sampled.iloc[0])
    for name in ("heads", "bodies"):
        rows = t[name]
        assert len(rows) >= 0.8 * n and rows.frame_index.is_unique, name
        emb = np.stack(rows.embedding.to_numpy())
        assert emb.shape[1] == DIM and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # The body row embeds the body, not the head of the same frame.
    both = t["heads"].merge(t["bodies"], on="frame_index", suffixes=("_head", "_body"))
    same_frame = [float(np.dot(h, b)) for h, b in zip(both.embedding_head, both.embedding_body)]
    assert len(both) >= 0.8 * n and np.median(same_frame) < 0.8
    heads, bodies = (np.stack(t[n].bbox.to_numpy()) for n in ("heads", "bodies"))
    assert (bodies[:, 3] - bodies[:, 1]).mean() > 4 * (heads[:, 3] - heads[:, 1]).mean()  # a whole dancer, not a head
    assert bodies.max() <= 518 + 1  # source pixels of a 518x496 video
    manifest = json.loads((out / "manifest.json").read_text())
    order = manifest["stages"]["order"]
    assert [s for s in order if s in ("major_character", "faces", "heads", "bodies")] == \
        ["major_character", "faces", "heads", "bodies"]


def photo_bodies(shared, cfg: Config, rel: str) -> np.ndarray:
    """OSNet embeddings of the people the run's person detector finds in a photo."""
    backends = config_backends(cfg)
    img = cv2.imread(str(shared / "media/faces" / rel))
    scale = min(1.0, 640 / max(img.shape[:2]))
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    people = backends.get("person_detector").detect([img])
    emb = backends.get("reid_embedder").embed([crop(img, b) for b in people.xyxy])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_body_embeddings_same_person_across_frames_closer_than_different_people(dancer, shared):
    _, t = dancer
    dancer_frames = np.stack(t["bodies"].embedding.to_numpy())
    cfg = config(shared)
    obama_biden = photo_bodies(shared, cfg, "face_recognition_misc/two_people.jpg")
    jolie_pitt = photo_bodies(shared, cfg, "multi_face/couple.jpg")
    assert len(obama_biden) == len(jolie_pitt) == 2
    same = (dancer_frames @ dancer_frames.T)[np.triu_indices(len(dancer_frames), 1)]
    # Different people: the dancer against each of them, and Obama against Biden (both in
    # dark suits, arms crossed). Not Jolie against Pitt: their boxes each hold the other's head.
    different = np.concatenate([(dancer_frames @ np.concatenate([obama_biden, jolie_pitt]).T).ravel(),
                                [float(obama_biden[0] @ obama_biden[1])]])
    margin = float(np.median(same) - different.max())
    print(f"body cosine: same dancer across frames median {np.median(same):.3f} (10th pct {np.percentile(same, 10):.3f}); "
          f"different people max {different.max():.3f} (median {np.median(different):.3f}); margin {margin:.3f}")
    assert margin > 0.05
    assert np.percentile(same, 10) > np.median(different) + 0.2


def test_head_is_paired_with_the_body_it_sits_on():
    # Two people side by side, a third behind the first (its box also holds the first head).
    people = Detections.of([[0, 0, 100, 300], [120, 10, 220, 300], [-50, -40, 150, 320]], np.ones(3), PERSON)
    heads = Detections.of([[30, 5, 70, 55], [150, 15, 190, 60], [400, 0, 440, 50]], np.ones(3), 1, [0, 0, 0])
    paired = pair_bodies(heads, people, max_cost=2.5)
    assert paired.xyxy.tolist() == [[0, 0, 100, 300], [120, 10, 220, 300]]  # the third head has no body
    # Arms raised above the head: the box top is 1.7 head heights above it, still the owner.
    raised = Detections.of([[0, -85, 100, 300]], [1.0], PERSON)
    assert len(pair_bodies(heads[[0]], raised, 2.5)) == 1
    assert len(pair_bodies(heads[[0]], raised, 1.0)) == 0


def test_a_user_head_model_plugs_in_through_the_registry(shared, tmp_path):
    cfg = config(shared, **{"heads.embedder": "onnx", "heads.model_path": str(shared / "weights/reid/osnet_x0_25_msmt17.onnx"),
                            "heads.mean": 0.45, "heads.std": 0.225})
    embedder = config_backends(cfg).get("head_embedder")
    assert embedder.name == "onnx" and embedder.dim == DIM
    crops = [np.full((40, 30, 3), v, np.uint8) for v in (0, 128, 255)]
    out = embedder.embed(crops)
    assert out.shape == (3, DIM) and embedder.stats.calls == 1  # one call for the batch
    assert np.linalg.norm(out[0] - out[2]) > 0
    missing = config(shared, **{"heads.embedder": "onnx", "heads.model_path": str(tmp_path / "none.onnx")})
    with pytest.raises(ConfigError, match="none.onnx not found"):
        config_backends(missing).get("head_embedder")


def test_crop_embedder_input_is_the_normalised_rgb_of_each_crop(shared):
    """OSNet's input, built in a reused buffer and normalised in place: to the bit, the
    crops resized, BGR -> RGB, (x / 255 - mean) / std; again after a batch of another size."""
    embedder = config_backends(config(shared)).get("reid_embedder")
    rng = np.random.default_rng(1)
    h, w = embedder.size
    for n in (5, 2, 7):
        crops = [rng.integers(0, 256, (int(rng.integers(20, 300)), int(rng.integers(10, 150)), 3), np.uint8)
                 for _ in range(n)]
        rgb = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] for c in crops])
        expected = (rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - embedder.mean) / embedder.std
        assert np.array_equal(embedder._tensor(crops), expected)
