"""Face quality is the L2 norm of the raw embedding (iQIYI-VID §5.1), not the detector's
score: a stage-level test with scripted backends whose two orders disagree."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vidpipe.backends.base import FACE, Detections, Detector, FaceEmbedder
from vidpipe.config import Config
from vidpipe.pipeline.stage import ClipContext, Frame
from vidpipe.stages.faces import FaceStage

SCORES = [0.99, 0.9, 0.8, 0.7]  # the detector's confidence: best first
NORMS = [2.0, 8.0, 5.0, 11.0]  # the raw embeddings' norms: another order


class FourFaces(Detector):
    """Test double: one face per frame, with SCORES."""

    name = "four_faces"

    def detect(self, images):
        n = len(images)
        return Detections.of([[10, 10, 60, 60]] * n, SCORES[:n], FACE, np.arange(n),
                             landmarks=np.zeros((n, 5, 2), np.float32))


class RawOfKnownNorm(FaceEmbedder):
    """Test double: face i's raw embedding is NORMS[frame] times a unit vector."""

    name = "known_norm"

    def embed(self, images, faces):
        unit = np.zeros((len(faces), 8), np.float32)
        unit[np.arange(len(faces)), faces.frame % 8] = 1.0
        return unit * np.array(NORMS, np.float32)[faces.frame, None]


class Provider:
    def get(self, task, name=None):
        return {"face_detector": FourFaces(), "face_embedder": RawOfKnownNorm()}[task]


def test_quality_is_the_raw_embeddings_norm_and_ranks_the_faces():
    stage = FaceStage(Config(), Provider())
    frames = [Frame(i, i / 4, np.zeros((100, 100, 3), np.uint8), 1.0) for i in range(len(NORMS))]
    rows = stage.process(ClipContext(None, SimpleNamespace(clip_id="c", video_id="v"), frames)).rows["faces"]
    order = np.argsort(rows["frame_index"])
    assert np.asarray(rows["quality"])[order] == pytest.approx(NORMS)
    assert np.asarray(rows["det_score"])[order] == pytest.approx(SCORES)
    # Ranked by norm (no rule ran: every face is ranked), whatever the detector thought.
    assert [rows["frame_index"][i] for i in np.argsort(rows["rank"])] == [3, 1, 2, 0]
    assert np.linalg.norm(np.stack(rows["embedding"]), axis=1) == pytest.approx(1.0)
