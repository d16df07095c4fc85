"""Head and person detector backends on real images: decoding, head formation, the choice."""

from __future__ import annotations

import importlib.util
import logging

import cv2
import numpy as np
import pytest

from vidpipe import registry
from vidpipe.backends.base import FACE, HEAD, PERSON, Detections
from vidpipe.backends.person_face import OUT_OF_FRAME, combine
from vidpipe.backends.wholebody import WholebodyDetector
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline.runner import config_backends
from vidpipe.weights import ENV_CACHE, ENV_WEIGHTS

WHOLEBODY = "head_det/yolov9_n_wholebody15_post_0145_1x3x480x640.onnx"


def image(shared, rel: str, max_side: int = 640) -> np.ndarray:
    img = cv2.imread(str(shared / "media/faces" / rel))
    scale = min(1.0, max_side / max(img.shape[:2]))
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def backends(shared, **settings):
    cfg = Config()
    cfg.set("run.weights_dir", str(shared / "weights"))
    for key, value in settings.items():
        cfg.set(key, value)
    return config_backends(cfg)


def centres(d: Detections) -> np.ndarray:
    return (d.xyxy[:, :2] + d.xyxy[:, 2:]) / 2


def test_wholebody_decodes_classes_and_boxes_on_a_real_photo(shared):
    # couple.jpg at full size (2280x1588): two heads, the woman's on the left, the man's on the
    # right; boxes come back in the image's pixels (the graph's 640x480 space scaled back).
    img = cv2.imread(str(shared / "media/faces/multi_face/couple.jpg"))
    found = WholebodyDetector(shared / "weights" / WHOLEBODY).detect([img])
    heads, faces, bodies = found.of_kind(HEAD), found.of_kind(FACE), found.of_kind(PERSON)
    assert len(heads) == 2 and len(faces) == 2 and len(bodies) >= 1
    h, w = img.shape[:2]
    left, right = heads[np.argsort(centres(heads)[:, 0])].xyxy
    assert left[2] < 0.45 * w < right[0]  # one head in each half
    for head in (left, right):
        assert 0.25 * h < head[3] - head[1] < 0.75 * h and head[1] < 0.3 * h  # big heads near the top
    for face in faces.xyxy:  # every face sits inside a head
        c = (face[:2] + face[2:]) / 2
        assert sum(((c >= b[:2]) & (c <= b[2:])).all() for b in heads.xyxy) == 1


def test_wholebody_counts_crowds_past_the_files_cap_of_20(shared):
    tile = cv2.resize(cv2.imread(str(shared / "media/faces/face_recognition_misc/lin-manuel-miranda.png")), (128, 96))
    crowd = np.tile(tile, (5, 5, 1))  # 25 heads
    assert (WholebodyDetector(shared / "weights" / WHOLEBODY, max_per_class=20).detect([crowd]).kind == HEAD).sum() == 20
    assert (WholebodyDetector(shared / "weights" / WHOLEBODY).detect([crowd]).kind == HEAD).sum() == 25


def test_person_face_forms_heads_from_faces_and_faceless_people():
    faces = Detections.of([[100, 100, 140, 150]], [0.9], FACE, landmarks=np.zeros((1, 5, 2), np.float32))
    people = Detections.of([[80, 95, 160, 400],  # the same person as the face
                            [300, 50, 400, 350]], [0.8, 0.7], PERSON)  # seen from behind: no face
    heads = combine(faces, people, 0, (480, 640))
    assert heads.kind.tolist() == [HEAD, HEAD] and heads.confidence.tolist() == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(heads.xyxy[0], [90, 88.25, 150, 155.75])  # 1.5 x 1.35 the face, 0.06 up
    np.testing.assert_allclose(heads.xyxy[1], [325, 50, 375, 108.5])  # half the box wide, at its top
    # A second detection of the same head is merged into the face-derived one.
    twice = Detections.of([[100, 100, 140, 150], [101, 99, 141, 151]], [0.9, 0.95], FACE)
    assert len(combine(twice, Detections.empty(), 0, (480, 640))) == 1


def test_person_face_marks_heads_of_person_boxes_whose_head_may_be_out_of_frame():
    """Boxes cut by the top edge, and narrow boxes cut by a side, cover arms, hands or a
    torso whose head is out of the frame (the hands-only clips of test_major_character.py).
    Their heads are still heads for the rule, marked so that none is a major head."""
    h, w = 360, 640
    people = Detections.of([[100, 0, 360, 160],  # a torso and hands, the head above the frame
                            [0, 45, 60, 258],  # a raised arm and hand coming in from the left
                            [580, 40, 640, 300],  # the same from the right
                            [250, 60, 450, 360],  # a medium shot: cut at the bottom only
                            [0, 200, 220, 360],  # the head and shoulders of someone seen from behind
                            ], [0.8, 0.8, 0.8, 0.7, 0.6], PERSON)
    face = Detections.of([[460, 80, 500, 130]], [0.9], FACE)
    heads = combine(face, people, 0, (h, w))
    assert len(heads) == 6 and heads.data[OUT_OF_FRAME].tolist() == [False, True, True, True, False, False]
    np.testing.assert_allclose(heads.xyxy[4:], [[300, 60, 400, 177], [55, 200, 165, 328.7]], atol=0.01)


def test_person_face_reuses_the_runs_face_and_person_detectors(shared):
    b = backends(shared)
    heads = b.get("head_detector")
    assert heads.name == "person_face"
    assert heads.faces is b.get("face_detector") and heads.people is b.get("person_detector")
    assert heads.searched == {HEAD: "person_face", FACE: "scrfd", PERSON: "yolox"}
    found = heads.detect([image(shared, "face_recognition_misc/two_people.jpg")])
    assert [int((found.kind == k).sum()) for k in (HEAD, FACE, PERSON)] == [2, 2, 2]


def test_yolo_onnx_decodes_an_ultralytics_format_model(shared, tmp_path):
    """The wholebody graph without its pre/post-processing IS an Ultralytics-format YOLOv9:
    input RGB 0-1 [1, 3, 480, 640], output [1, 4 + 15 classes, 6300]; heads are class 5."""
    import onnx
    from onnx.utils import Extractor

    model = Extractor(onnx.load(str(shared / "weights" / WHOLEBODY))).extract_model(["output_prep"], ["output0"])
    onnx.save(model, tmp_path / "yolov9_heads.onnx")
    b = backends(shared, **{"major_character.detector": "yolo_onnx", "major_character.model_path": str(tmp_path / "yolov9_heads.onnx"),
                            "major_character.head_class": 5})
    yolo = b.get("head_detector")
    img = image(shared, "multi_face/couple.jpg")
    ours = yolo.detect([img])
    reference = WholebodyDetector(shared / "weights" / WHOLEBODY).detect([img]).of_kind(HEAD)
    assert len(ours) == len(reference) == 2 and set(ours.kind) == {HEAD}
    a, r = ours.xyxy[np.argsort(ours.xyxy[:, 0])], reference.xyxy[np.argsort(reference.xyxy[:, 0])]
    assert np.abs(a - r).max() < 0.015 * img.shape[1]  # letterbox vs stretch: the same heads (4.8 px apart)
    with pytest.raises(ConfigError, match="head class 15 is not among the 15 classes"):
        backends(shared, **{"major_character.detector": "yolo_onnx", "major_character.model_path": str(tmp_path / "yolov9_heads.onnx"),
                            "major_character.head_class": 15}).get("head_detector")


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="vidpipe[yolo] not installed")
def test_yolo_pt_runs_an_ultralytics_model(shared, tmp_path, monkeypatch):
    pytest.importorskip("torchvision")  # Ultralytics' predictor imports it
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(str(tmp_path / "untrained.pt"))  # built from its yaml: nothing downloaded
    b = backends(shared, **{"major_character.detector": "yolo_pt", "major_character.model_path": str(tmp_path / "untrained.pt")})
    found = b.get("head_detector").detect([image(shared, "multi_face/couple.jpg")] * 2)
    assert set(found.frame) <= {0, 1} and set(found.kind) <= {HEAD}


def test_yolox_and_scrfd_person_find_the_people(shared):
    img = image(shared, "face_recognition_misc/two_people.jpg")  # Obama and Biden, side by side
    for name in ("yolox", "scrfd_person"):
        people = backends(shared, **{"bodies.detector": name}).get("person_detector").detect([img])
        assert len(people) == 2 and set(people.kind) == {PERSON}, name
        assert sorted(centres(people)[:, 0] < img.shape[1] / 2) == [False, True], name
    # SCRFD person's coarsest stride is 128: a 600x604 photo must be padded to 640x640.
    selfie = backends(shared, **{"bodies.detector": "scrfd_person"}).get("person_detector").detect(
        [image(shared, "multi_face/selfie-many-people.jpg")])
    assert len(selfie) >= 2


def test_yolox_batched_call_finds_what_single_calls_find(shared):
    """One network call for a batch (its input built in a buffer reused from call to call):
    the same boxes and scores, to the bit, as one call per image, in either order."""
    detector = backends(shared).get("person_detector")
    names = ("two_people.jpg", "obama3.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png")
    imgs = [image(shared, f"face_recognition_misc/{n}") for n in names]
    calls = detector.stats.calls
    together = detector.detect(imgs)
    assert detector.stats.calls == calls + 1 and len(set(together.frame.tolist())) >= 3
    alone = [detector.detect([img]) for img in imgs]
    again = detector.detect(imgs)
    assert together.frame.tolist() == [i for i, d in enumerate(alone) for _ in range(len(d))]
    for got in (together, again):
        assert np.array_equal(got.xyxy, np.concatenate([d.xyxy for d in alone]))
        assert np.array_equal(got.confidence, np.concatenate([d.confidence for d in alone]))


def test_an_input_buffer_is_reused_by_its_thread_only():
    import threading

    from vidpipe.backends._onnx import InputBuffer

    buffer = InputBuffer(keep_mb=1)
    a = buffer.view((2, 3, 4, 5))
    b = buffer.view((1, 3, 4, 5))
    assert b.shape == (1, 3, 4, 5) and b.dtype == np.float32 and np.shares_memory(a, b)
    other = []
    thread = threading.Thread(target=lambda: other.append(buffer.view((1, 3, 4, 5))))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], a)
    big = buffer.view((1, 3, 512, 512))  # 3 MB, over keep_mb: its own array, not kept
    assert not np.shares_memory(big, a) and not np.shares_memory(buffer.view((1, 3, 512, 512)), big)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = Config()
    cfg.set("run.weights_dir", str(tmp_path / "none"))
    return cfg


def test_fresh_machine_heads_from_dlib_and_hog_and_says_why(no_weights, caplog, shared):
    if not hasattr(cv2, "HOGDescriptor"):
        pytest.skip("this OpenCV has no HOG (vidpipe pins opencv-python<5)")
    with caplog.at_level(logging.INFO, logger="vidpipe"):
        heads = config_backends(no_weights).get("head_detector")
    assert heads.describe() == "person_face (heads from faces: dlib + people: hog)"
    said = caplog.text
    assert "person detector: hog" in said and "yolox skipped: weights file yolox_nano.onnx" in said
    assert "face detector: dlib" in said and "head detector: person_face" in said
    found = heads.detect([image(shared, "face_recognition_misc/lin-manuel-miranda.png")])
    assert (found.kind == HEAD).sum() == 1


def test_gpl_and_user_models_are_never_chosen_by_auto():
    specs = registry.specs("head_detector")
    assert {n for n, s in specs.items() if s.auto is not None} == {"person_face"}
    assert {"wholebody", "yolo_onnx", "yolo_pt"} <= set(specs)


def test_hog_skips_frames_smaller_than_its_window():
    """OpenCV's HOG segfaults on an image smaller than its 64x128 window (a 64x36 video killed
    the whole run); such a frame holds no findable person. Run in a child: a crash is a red test,
    not a dead test session."""
    import subprocess
    import sys

    code = ("import numpy as np; from vidpipe.backends.hog import HogPersonDetector; d = HogPersonDetector(); "
            "print(sum(len(d.detect([np.zeros((h, w, 3), np.uint8)])) for h, w in [(36, 64), (63, 200), (200, 31)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr[-500:]
