"""Active speaker: the Light-ASD network from its released weights, upstream's face crop,
face tracks between sampled detections, and `score_active_speakers` on real media."""

from __future__ import annotations

import numpy as np
import pytest

from vidpipe.active_speaker import crop_tracks, follow, grid_times, score_active_speakers, score_tracks
from vidpipe.backends.base import FACE, HEAD, Detections
from vidpipe.config import Config
from vidpipe.pipeline.clips import Clip
from vidpipe.pipeline.runner import config_backends
from vidpipe.pipeline.stage import ClipContext, Frame
from vidpipe.stages.asd import major_face
from vidpipe.video import decode_range, probe

MEDIUM_SHOT = (3.580083, 7.884387)  # the performer (the clips table's times)
AUDIENCE_SHOT = (7.884387, 10.019856)


def test_tracks_follow_faces_between_detections():
    times = np.array([0.0, 0.25, 0.5, 0.75, 2.5, 2.75])  # a 1.75 s gap in the middle
    boxes = np.array([[10 + 40 * t, 20, 50 + 40 * t, 60] for t in times])  # moving right at 40 px/s
    grid = grid_times(0.0, 3.2, 25)
    assert len(grid) == 80 and grid[1] == pytest.approx(0.04)
    track = follow(times, boxes, grid, max_gap_s=1.0, hold_s=0.25, smooth_frames=1)
    followed = track.followed
    assert followed[grid <= 1.0 + 1e-9].all() and not followed[(grid > 1.01) & (grid < 2.25 - 1e-9)].any()
    assert followed[(grid >= 2.25) & (grid <= 3.0 + 1e-9)].all() and not followed[grid > 3.01].any()
    inside = followed & (grid <= 0.75)
    assert track.boxes[inside, 0] == pytest.approx(10 + 40 * grid[inside], abs=1e-6)  # linear between detections
    assert track.boxes[(grid > 0.75) & followed & (grid < 1.01), 0] == pytest.approx(40.0)  # held after the last
    # A face that stays put, detected with ±6 px of jitter: the 13-frame median steadies it.
    still = np.array([[100 + 6 * (-1) ** i, 50, 160 + 6 * (-1) ** i, 110] for i in range(len(times))])
    raw = follow(times[:4], still[:4], grid, smooth_frames=1).boxes[:19, 0] - 100
    steady = follow(times[:4], still[:4], grid, smooth_frames=13).boxes[:19, 0] - 100
    assert np.abs(steady[3:-3]).mean() < 0.5 * np.abs(raw[3:-3]).mean()


def test_the_major_face_is_the_rules_or_else_the_largest():
    frames = [Frame(i, 1.0 + i / 4, np.zeros((90, 160, 3), np.uint8), 2.0) for i in range(3)]
    small, large = [0, 0, 10, 10], [50, 0, 90, 40]
    faces = Detections.merge([
        Detections.of([small, large], [0.9, 0.9], FACE, 0, major=np.array([True, False])),
        Detections.of([large, small], [0.9, 0.9], FACE, 1, major=np.array([False, False])),
        Detections.of([large], [0.9], FACE, 2, major=np.array([False])),
    ])
    ctx = ClipContext(None, Clip("v-0000", "v", 0, 1.0, 2.0, "ok", None), frames, found=faces)
    times, boxes = major_face(ctx)  # no rule ran: the largest face of each frame
    assert times.tolist() == [1.0, 1.25, 1.5] and (boxes == np.array([large] * 3) * 2).all()
    ctx.searched = {HEAD: "person_face"}  # the rule ran: its major faces only
    times, boxes = major_face(ctx)
    assert times.tolist() == [1.0] and (boxes == np.array([small]) * 2).all()
    ctx.found = faces[faces.frame > 0]
    assert major_face(ctx) is None  # no major face in any frame
    ctx.found, ctx.searched = Detections.empty(), {}
    assert major_face(ctx) is None


@pytest.fixture(scope="module")
def cfg(shared) -> Config:
    cfg = Config()
    cfg.set("run.weights_dir", str(shared / "weights"))
    return cfg


@pytest.fixture(scope="module")
def scorer(cfg):
    return config_backends(cfg).get("active_speaker")


def torch_net(weights):
    import torch

    from vidpipe.backends._light_asd_net import LightASD

    return LightASD.from_state_dict(torch.load(weights, map_location="cpu", weights_only=True))


def test_light_asd_loads_both_released_weights(cfg, scorer):
    net = torch_net(scorer.weight_files[0])
    n = sum(p.numel() for p in net.parameters())
    assert 0.9e6 < n < 1.1e6  # "about 1 M parameters"
    cfg_ava = Config()
    cfg_ava.set("run.weights_dir", cfg.run.weights_dir)
    cfg_ava.set("asd.weights", "light_asd_ava")
    ava = config_backends(cfg_ava).get("active_speaker")
    assert ava.weight_files[0].name == "light_asd_ava.model"
    assert not np.allclose(torch_net(ava.weight_files[0]).fc.weight.detach(), net.fc.weight.detach())
    rng = np.random.default_rng(3)
    mfcc = rng.normal(0, 10, (1, 80, 13)).astype(np.float32)
    assert not np.allclose(ava.audio_frontend(mfcc), scorer.audio_frontend(mfcc), atol=1e-3)  # each session its file's


def test_the_network_gives_upstreams_logits(scorer):
    """The same input through upstream Light-ASD's own ASD_Model + lossAV (its repository's
    code, run once outside vidpipe) gave these logits for frames 0, 5, 10, 15, 20, 25; and
    each part as the scorer runs it (ONNX Runtime on the CPU) gives the torch network's
    numbers, at 1 and 3 tracks of other lengths (the axes the export left free)."""
    import torch

    from vidpipe.backends._light_asd_net import VisualEncoder
    from vidpipe.backends._torch import torch_call
    from vidpipe.backends.light_asd import VISUAL_CONTEXT

    assert VISUAL_CONTEXT == VisualEncoder.CONTEXT  # the chunks' context, kept without importing torch
    net = torch_net(scorer.weight_files[0])
    rng = np.random.default_rng(7)
    mfcc = rng.normal(0, 10, (1, 120, 13)).astype(np.float32)
    crops = rng.integers(0, 256, (1, 30, 112, 112)).astype(np.uint8)
    visual, audio = scorer.visual_frontend(crops), scorer.audio_frontend(mfcc)
    logits = scorer.classifier(audio, visual)[0]
    upstream = [-1.2961, -1.4621, -1.3955, -1.1625, -0.8705, -0.6628]
    assert logits[::5] == pytest.approx(upstream, abs=2e-4)
    for tracks, frames in ((1, 30), (3, 11)):
        mfcc = rng.normal(0, 10, (tracks, 4 * frames, 13)).astype(np.float32)
        crops = rng.integers(0, 256, (tracks, frames, 112, 112)).astype(np.uint8)
        with torch.inference_mode():
            v, a = net.visual(torch.from_numpy(crops)), net.audio(torch.from_numpy(mfcc))
            theirs = net.logits(a, v).numpy()
        ours_v, ours_a = scorer.visual_frontend(crops), scorer.audio_frontend(mfcc)
        assert np.abs(ours_v - v.numpy()).max() < 1e-4 and np.abs(ours_a - a.numpy()).max() < 1e-4
        assert ours_a.shape == (tracks, frames, 128)
        assert np.abs(scorer.classifier(a.numpy(), v.numpy()) - theirs).max() < 1e-4
    in_torch = torch_call(scorer._module(lambda: net, "classifier"), "cpu")  # what CUDA runs, arrays in and out
    assert np.abs(in_torch(a.numpy(), v.numpy()) - theirs).max() < 1e-6


def test_crops_are_upstreams(shared, scorer):
    """Upstream: pad the picture with 110-grey, cut rows cy - s .. cy + s(1 + 2 cs) and the
    same width around cx (s = half the box's longer side, cs = 0.4), resize to 224x224, keep
    the centre 112x112."""
    import cv2

    info = probe(shared / "media/videos/short_hamilton_clip.mp4")
    _, gray = next(decode_range(info, 5.0, 5.1, 25, gray=True))
    box = np.array([220.0, 80.0, 296.0, 200.0])  # the performer's face; upstream's int() bounds are exact here
    s = max(box[2] - box[0], box[3] - box[1]) / 2
    cx, cy, cs = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 0.4
    pad = int(s * (1 + 2 * cs))
    padded = np.pad(gray, pad, constant_values=110)
    face = padded[int(cy + pad - s) : int(cy + pad + s * (1 + 2 * cs)), int(cx + pad - s * (1 + cs)) : int(cx + pad + s * (1 + cs))]
    upstream = cv2.resize(face, (224, 224))[56:168, 56:168]
    ours = scorer.crop(gray, box)
    assert ours.shape == (112, 112) and ours.dtype == np.uint8
    assert np.abs(ours.astype(float) - upstream).mean() < 1.0
    assert np.abs(ours.astype(float) - np.roll(upstream, 1, axis=0)).mean() > 5  # one pixel off shows


@pytest.fixture(scope="module")
def performer(shared, cfg):
    return score_active_speakers(shared / "media/videos/short_hamilton_clip.mp4", *MEDIUM_SHOT, cfg)


def test_the_performer_speaks_and_the_model_listens(shared, performer, scorer):
    assert len(performer) == 1
    him = performer[0]
    assert him.track.followed.mean() > 0.95
    assert him.speaking_ratio > 0.9 and him.mean_logit > 1.0
    # The same face track with the sound taken away: the voice was part of the verdict.
    info = probe(shared / "media/videos/short_hamilton_clip.mp4")
    crops = crop_tracks(info, [him.track], scorer)
    mute = score_tracks(scorer, np.zeros(len(him.track.times) * 640, np.int16), [him.track], crops)[0]
    print(f"\nperformer: mean logit {him.mean_logit:.2f} with his audio, {mute.mean_logit:.2f} without")
    assert mute.mean_logit < him.mean_logit - 0.5


def test_nobody_in_the_audience_speaks(shared, cfg):
    faces = score_active_speakers(shared / "media/videos/short_hamilton_clip.mp4", *AUDIENCE_SHOT, cfg)
    print("\naudience: " + ", ".join(f"{f.mean_logit:.2f} ({f.speaking_ratio:.0%})" for f in faces))
    assert len(faces) >= 3
    assert all(f.speaking_ratio < 0.5 and f.mean_logit < 0 for f in faces)
