"""Face backends on real photos (SCRFD-500M + MobileFaceNet-128, dlib), and their choice."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidpipe import registry
from vidpipe.backends._onnx import onnx_providers
from vidpipe.backends.arcface import ArcFaceEmbedder, align_face
from vidpipe.backends.base import Detections
from vidpipe.backends.dlib_faces import DlibFaceDetector, DlibFaceEmbedder, five_points
from vidpipe.backends.scrfd import ScrfdFaceDetector, detector_input
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline.runner import config_backends
from vidpipe.registry import BackendError
from vidpipe.weights import ENV_CACHE, ENV_WEIGHTS, WeightsCorrupt, WeightsError


@pytest.fixture(autouse=True)
def _isolated_lookup(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookup must not see the developer's own cache or $VIDPIPE_WEIGHTS."""
    monkeypatch.setenv(ENV_CACHE, str(tmp_path_factory.getbasetemp() / "vidpipe-cache"))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    monkeypatch.chdir(tmp_path_factory.getbasetemp())


def face_backends(weights_dir: Path | None = None, detector: str = "auto", embedder: str = "auto"):
    cfg = Config()
    cfg.set("run.device", "cpu")
    cfg.set("run.weights_dir", None if weights_dir is None else str(weights_dir))
    cfg.set("faces.detector", detector)
    cfg.set("faces.embedder", embedder)
    b = config_backends(cfg)
    det = b.get("face_detector")
    emb_name = "dlib" if embedder == "auto" and det.name == "dlib" else None
    return det, b.get("face_embedder", emb_name)


@dataclass
class Pair:
    """A detector and an embedder, as the faces stage uses them."""

    detector: object
    embedder: object

    def detect1(self, img: np.ndarray) -> Detections:
        return self.detector.detect([img])

    def embed1(self, img: np.ndarray, d: Detections) -> np.ndarray:
        return self.embedder.embed([img], d)


@pytest.fixture(scope="module")
def scrfd(shared: Path) -> Pair:
    det, emb = face_backends(shared / "weights", "scrfd", "arcface")
    assert isinstance(det, ScrfdFaceDetector) and isinstance(emb, ArcFaceEmbedder)
    return Pair(det, emb)


@pytest.fixture(scope="module")
def dlib_backend() -> Pair:
    det, emb = face_backends(None, "dlib", "dlib")
    assert isinstance(det, DlibFaceDetector) and isinstance(emb, DlibFaceEmbedder)
    return Pair(det, emb)


def _img(shared: Path, rel: str) -> np.ndarray:
    img = cv2.imread(str(shared / "media" / "faces" / rel))
    assert img is not None, rel
    return img


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _main_face(backend: Pair, img: np.ndarray) -> np.ndarray:
    """Raw embedding of the biggest face."""
    d = backend.detect1(img)
    assert len(d), "no face found"
    return backend.embed1(img, d[int(d.area.argmax())])[0]


def _degrade(img: np.ndarray) -> np.ndarray:
    """Half-resolution round trip, blur and JPEG q40: a mild video-like degradation."""
    h, w = img.shape[:2]
    x = cv2.resize(cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h))
    x = cv2.GaussianBlur(x, (5, 5), 1.0)
    return cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)


def _check_geometry(img: np.ndarray, d: Detections) -> None:
    h, w = img.shape[:2]
    boxes, scores, landmarks = d.xyxy, d.confidence, d.data.get("landmarks")
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and landmarks is not None
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    for box, lm in zip(boxes, landmarks):
        x1, y1, x2, y2 = box
        if x1 <= 0 or y1 <= 0 or x2 >= w or y2 >= h:
            continue  # a face cut by the border: its box is clipped, its landmarks may be outside
        inside = (lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)
        assert inside.all(), (box, lm)
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left/right as seen in the image
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes above nose above mouth


# ------------------------------------------------------------------ no shared data needed

def test_onnx_providers() -> None:
    import onnxruntime as ort

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert onnx_providers("auto")[0] == ("CUDAExecutionProvider" if cuda else "CPUExecutionProvider")
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        onnx_providers("tpu")


def test_detector_input_never_enlarges() -> None:
    small, s = detector_input(np.full((80, 100, 3), 7, np.uint8), 640)
    assert s == 1.0 and small.shape == (96, 128, 3)
    assert (small[:80, :100] == 7).all() and not small[80:].any() and not small[:, 100:].any()
    frame, s = detector_input(np.zeros((1080, 1920, 3), np.uint8), 640)
    assert s == pytest.approx(1 / 3) and frame.shape == (384, 640, 3)


def test_align_face_matches_insightface_norm_crop() -> None:
    from insightface.utils.face_align import norm_crop

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    kps = np.array([[110, 120], [180, 118], [146, 160], [118, 200], [175, 198]], np.float32)
    kps += rng.normal(0, 3, kps.shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = norm_crop(img, kps, 112)
    ours = align_face(img, kps, 112)
    # Same transform to ~1e-5 px; on a noise image OpenCV 4's fixed-point warp still moves a
    # few samples to the neighbouring pixel (21 of 37,632 values here).
    assert (np.abs(ref.astype(int) - ours.astype(int)) > 1).mean() < 0.001


def test_five_points_from_dlib_order() -> None:
    # dlib: image-right eye corners (0, 1), image-left eye corners (2, 3), nose base (4)
    parts = np.array([[80, 50], [70, 50], [20, 50], [30, 50], [50, 80]], np.float32)
    lm = five_points(parts)
    assert lm[0].tolist() == [25, 50] and lm[1].tolist() == [75, 50]
    assert lm[2][1] < 80 and lm[3][0] < 50 < lm[4][0] and lm[3][1] > 80 and lm[4][1] > 80


def test_unknown_backend_is_one_line_error() -> None:
    with pytest.raises(BackendError, match="unknown face_detector 'retina'; choose from auto, dlib, scrfd"):
        face_backends(None, "retina")


def test_scrfd_without_weights_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as ei:
        face_backends(tmp_path, "scrfd", "arcface")
    msg = str(ei.value)
    assert "\n" not in msg and "scrfd_500m.onnx" in msg and str(tmp_path) in msg and "vidpipe weights fetch" in msg


def test_auto_without_weights_picks_dlib_and_says_why_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry._said.clear()
    with caplog.at_level(logging.INFO, logger="vidpipe"):
        d1, e1 = face_backends(tmp_path)
        d2, e2 = face_backends(tmp_path)
    assert isinstance(d1, DlibFaceDetector) and isinstance(e1, DlibFaceEmbedder)
    said = [r.getMessage() for r in caplog.records if r.name == "vidpipe"]
    assert len(said) == 1, said  # the embedder follows the dlib detector without a word
    assert said[0].startswith("face detector: dlib") and "scrfd_500m.onnx" in said[0]


def test_auto_with_corrupt_weights_raises(tmp_path: Path) -> None:
    (tmp_path / "scrfd_500m.onnx").write_bytes(b"truncated")
    with pytest.raises(WeightsCorrupt) as ei:
        face_backends(tmp_path)
    assert "\n" not in str(ei.value) and str(tmp_path / "scrfd_500m.onnx") in str(ei.value)


# ------------------------------------------------------------------ SCRFD + MobileFaceNet on real photos

def test_auto_with_shared_weights_picks_scrfd(shared: Path) -> None:
    det, emb = face_backends(shared / "weights")
    assert isinstance(det, ScrfdFaceDetector) and isinstance(emb, ArcFaceEmbedder) and emb.dim == 128
    assert [p.name for p in det.weight_files + emb.weight_files] == ["scrfd_500m.onnx", "mobilefacenet_128d.onnx"]


def test_scrfd_two_people(scrfd: Pair, shared: Path) -> None:
    img = _img(shared, "face_recognition_misc/two_people.jpg")
    d = scrfd.detect1(img)
    assert len(d) == 2
    _check_geometry(img, d)
    # one face in each half of the picture
    assert sorted(((d.xyxy[:, 0] + d.xyxy[:, 2]) / 2 < img.shape[1] / 2).tolist()) == [False, True]
    emb = scrfd.embed1(img, d)
    assert emb.shape == (2, 128) and emb.dtype == np.float32
    assert (np.linalg.norm(emb, axis=1) > 2).all()  # raw, not normalised


def test_scrfd_selfie_many_people(scrfd: Pair, shared: Path) -> None:
    # 7 faces are visible; the 7th is cut by the bottom-left border (measured: 6 found at 608 px)
    img = _img(shared, "multi_face/selfie-many-people.jpg")
    d = scrfd.detect1(img)
    assert 6 <= len(d) <= 7
    _check_geometry(img, d)


def test_scrfd_batch_and_empty(scrfd: Pair, shared: Path) -> None:
    imgs = [_img(shared, "face_recognition_misc/obama3.jpg"), np.zeros((200, 300, 3), np.uint8),
            _img(shared, "face_recognition_misc/obama_small.jpg")]
    dets = scrfd.detector.detect(imgs)
    assert dets.frame.tolist() == [0, 2]  # one Detections for the batch; rows say which image
    embs = scrfd.embedder.embed(imgs, dets)
    assert embs.shape == (2, 128)
    assert _cos(embs[0], embs[1]) > 0.5  # the same man, 2333 px and 320 px photos


def test_scrfd_batched_call_finds_what_single_calls_find(scrfd: Pair, shared: Path) -> None:
    """A batch is one network call whose outputs insightface's decoder reads back image by
    image (its own blob is not built again): the same boxes, scores and landmarks, to the
    bit, as one call per image."""
    names = ("obama3.jpg", "obama_small.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png")
    imgs = [_img(shared, f"face_recognition_misc/{n}") for n in names]
    imgs = [cv2.resize(i, (640, 480)) for i in imgs]  # one padded size: one batched call
    calls = scrfd.detector.stats.calls
    together = scrfd.detector.detect(imgs)
    assert scrfd.detector.stats.calls == calls + 1
    alone = [scrfd.detector.detect([img]) for img in imgs]
    assert sorted(set(together.frame.tolist())) == [0, 1, 2, 3]  # a face in each
    assert together.frame.tolist() == [i for i, d in enumerate(alone) for _ in range(len(d))]
    for got, want in ((together.xyxy, [d.xyxy for d in alone]), (together.confidence, [d.confidence for d in alone]),
                      (together.data["landmarks"], [d.data["landmarks"] for d in alone])):
        assert np.array_equal(got, np.concatenate(want))


def test_scrfd_same_person_closer(scrfd: Pair, shared: Path) -> None:
    lmm = _img(shared, "face_recognition_misc/lin-manuel-miranda.png")
    e = _main_face(scrfd, lmm)
    same = _cos(e, _main_face(scrfd, _degrade(lmm)))
    others = [_cos(e, _main_face(scrfd, _img(shared, f"face_recognition_misc/{n}")))
              for n in ("alex-lacamoire.png", "obama3.jpg", "obama_small.jpg")]
    assert same > 0.9 and max(others) < 0.4  # measured 0.996 vs <= 0.05


def test_scrfd_celebrity5_leave_one_out(scrfd: Pair, shared: Path) -> None:
    embs, labels = [], []
    for person in sorted((shared / "media/faces/celebrity5_train").iterdir()):
        for f in sorted(person.glob("*.jpg")):
            embs.append(_main_face(scrfd, cv2.imread(str(f))))
            labels.append(person.name)
    e = np.array(embs)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.array(labels)
    acc = float((lab[sim.argmax(1)] == lab).mean())
    assert len(lab) >= 70 and len(set(labels)) == 5
    assert acc >= 0.93, acc  # measured 0.986 (70/71); chance is ~0.2


# ------------------------------------------------------------------ dlib on real photos

def test_dlib_finds_obama(dlib_backend: Pair, shared: Path) -> None:
    for name in ("obama3.jpg", "obama_small.jpg", "obama_partial_face.jpg"):
        img = _img(shared, f"face_recognition_misc/{name}")
        d = dlib_backend.detect1(img)
        assert len(d) == 1, name
        _check_geometry(img, d)
        assert d.confidence[0] > 0.5


def test_dlib_landmarks_agree_with_scrfd(dlib_backend: Pair, scrfd: Pair, shared: Path) -> None:
    img = _img(shared, "face_recognition_misc/two_people.jpg")
    a, b = dlib_backend.detect1(img), scrfd.detect1(img)
    assert len(a) == len(b) == 2
    a_lm = a.data["landmarks"][np.argsort(a.xyxy[:, 0])]
    b_lm = b.data["landmarks"][np.argsort(b.xyxy[:, 0])]
    iod = np.linalg.norm(b_lm[:, 1] - b_lm[:, 0], axis=1)[:, None]
    err = np.linalg.norm(a_lm - b_lm, axis=2) / iod
    assert (err[:, :2] < 0.15).all() and (err < 0.35).all(), err.round(2)


def test_dlib_same_person_closer(dlib_backend: Pair, shared: Path) -> None:
    lmm = _img(shared, "face_recognition_misc/lin-manuel-miranda.png")
    e = _main_face(dlib_backend, lmm)
    assert e.shape == (128,) and 1.0 < np.linalg.norm(e) < 2.0
    same = _cos(e, _main_face(dlib_backend, _degrade(lmm)))
    others = [_cos(e, _main_face(dlib_backend, _img(shared, f"face_recognition_misc/{n}")))
              for n in ("alex-lacamoire.png", "obama3.jpg")]
    obama = _cos(_main_face(dlib_backend, _img(shared, "face_recognition_misc/obama3.jpg")),
                 _main_face(dlib_backend, _img(shared, "face_recognition_misc/obama_small.jpg")))
    # dlib descriptors are not zero-centred: different people still sit near cosine 0.88
    assert same > max(others) + 0.05 and obama > max(others) + 0.05  # measured 0.999 / 0.974 vs <= 0.884


def test_dlib_cnn_detector_path(shared: Path) -> None:
    """The MMOD CNN detector ("auto" picks it on CUDA dlib builds) also runs on CPU, slowly."""
    b = DlibFaceDetector(device="cpu", detector="cnn", upsample=0)
    assert b.detector_kind == "cnn" and b.weight_files[-1].name == "mmod_human_face_detector.dat"
    img = _img(shared, "face_recognition_misc/obama_small.jpg")  # 320x240: ~0.5 s on CPU
    d = b.detect([img])
    assert len(d) == 1 and d.confidence[0] > 0.5
    _check_geometry(img, d)
    with pytest.raises(ValueError, match="dlib detector must be auto, hog or cnn"):
        DlibFaceDetector(detector="mmod")
