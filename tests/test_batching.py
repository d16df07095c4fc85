"""Stages over batches of clips: the order check, clips handed over together up to
`run.batch_frames`, detectors filling their network batches across clips, and stores that
stay byte-identical to one clip at a time."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import vidpipe
from synth import make_video
from vidpipe.cli import main
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline import stage as stage_module
from vidpipe.pipeline.runner import Pipeline
from vidpipe.pipeline.stage import ClipContext, Stage, StageResult, check_order, register_stage, stage_classes


class CountingStage(Stage):
    """A toy stage that notes how many clips each call gets, and writes one row per frame."""

    name = "counting"
    order = 99.0
    default = False
    tables = {"counted": pa.schema([("clip_id", pa.string()), ("time_s", pa.float64()), ("mean", pa.float32())])}
    calls: list[int] = []

    def process(self, ctx: ClipContext) -> StageResult:
        means = np.array([f.image.mean() for f in ctx.frames], np.float32)
        return StageResult(rows={"counted": {"clip_id": [ctx.clip.clip_id] * len(means),
                                             "time_s": [f.time_s for f in ctx.frames], "mean": means}})

    def process_batch(self, ctxs: list[ClipContext]) -> list[StageResult]:
        CountingStage.calls.append(len(ctxs))
        return super().process_batch(ctxs)


@pytest.fixture
def counting_stage():
    register_stage(CountingStage)
    CountingStage.calls = []
    yield CountingStage
    stage_module._STAGES.pop(CountingStage.name)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "shots.mp4", [2.0, 1.5, 0.5, 2.0, 1.2])


def _tables(out: Path) -> dict[str, bytes]:
    """Every table file of the store, by its path inside it."""
    files = sorted(p for p in out.rglob("*.parquet") if "videos" not in p.parts)
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


# ---------------------------------------------------------------- order of the stages


@pytest.mark.parametrize("stages, message", [
    ("asd,speech", "stage asd needs 'speech' from stage speech, which runs after it"),
    ("audio", "stage audio needs 'speech', which no earlier stage provides: add speech before it"),
    ("faces,major_character", "stage faces reads 'major' from stage major_character, which runs after it"),
])
def test_a_wrong_stage_order_is_a_config_error(stages, message):
    cfg = Config()
    cfg.set("pipeline.stages", stages)
    with pytest.raises(ConfigError, match=message):
        Pipeline.build(cfg)


def test_the_default_order_and_a_right_one_pass():
    classes = stage_classes()
    assert check_order([classes[n] for n in Config().stage_names()]) is None
    assert check_order([classes["speech"], classes["asd"]]) is None
    assert check_order([classes["faces"]]) is None  # faces reads the rule's heads only when it runs


def test_the_cli_refuses_a_wrong_order_in_one_line(video, tmp_path):
    r = CliRunner().invoke(main, ["run", str(video), "--out", str(tmp_path / "o"), "--set", "pipeline.stages=asd,speech"])
    assert r.exit_code == 2, r.output
    assert "needs 'speech'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "asd").exists()


# ---------------------------------------------------------------- batches of clips


def test_clips_reach_a_stage_together_up_to_batch_frames(counting_stage, video, tmp_path):
    cfg = Config()
    cfg.set("pipeline.stages", ["counting"])
    cfg.set("run.batch_frames", 1)
    vidpipe.run(video, tmp_path / "one", cfg)
    assert CountingStage.calls == [1, 1, 1, 1]  # four clips of 1-30 s, one at a time
    CountingStage.calls = []
    cfg.set("run.batch_frames", 1000)
    vidpipe.run(video, tmp_path / "all", cfg)
    assert CountingStage.calls == [4]
    CountingStage.calls = []
    cfg.set("run.batch_frames", 14)  # 8 + 6 frames, then 8 + 5
    vidpipe.run(video, tmp_path / "some", cfg)
    assert CountingStage.calls == [2, 2]
    one, every, some = _tables(tmp_path / "one"), _tables(tmp_path / "all"), _tables(tmp_path / "some")
    assert len(vidpipe.read_table(tmp_path / "one", "counted")) == 8 + 6 + 8 + 5  # a row per frame of each kept clip
    assert one == every == some


# ---------------------------------------------------------------- real detectors


@pytest.fixture(scope="module")
def hamilton_runs(shared, tmp_path_factory):
    """Hamilton through the visual stages one clip at a time, and all clips in one batch."""
    runs = {}
    for batch_frames, coarse_step in ((1, 1), (1_000_000, 1), (1_000_000, 4)):
        cfg = Config()
        cfg.run.weights_dir = str(shared / "weights")
        cfg.set("pipeline.stages", ["major_character", "faces", "heads", "bodies"])
        cfg.set("run.batch_frames", batch_frames)
        cfg.set("major_character.coarse_step", coarse_step)  # 1: one pass over every frame, calls easy to count
        out = tmp_path_factory.mktemp(f"batch{batch_frames}-{coarse_step}")
        report = vidpipe.run(shared / "media/videos/short_hamilton_clip.mp4", out, cfg)
        assert report.exit_code == 0
        runs[batch_frames if coarse_step == 1 else "cheap"] = (out, report.outcomes[0], cfg)
    return runs


def test_batched_clips_write_byte_identical_stores(hamilton_runs):
    one, every = _tables(hamilton_runs[1][0]), _tables(hamilton_runs[1_000_000][0])
    assert {p.split("/")[0] for p in one} >= {"clips", "faces", "heads", "bodies"}
    assert one.keys() == every.keys()
    for path in one:
        assert one[path] == every[path], path
    # The cheap rule (coarse frames first) finds the same rows in the clips it keeps.
    cheap = _tables(hamilton_runs["cheap"][0])
    for path in one:
        if not path.startswith("clips/"):
            assert cheap[path] == one[path], path


def test_detectors_make_one_network_call_per_batch_across_clips(hamilton_runs):
    out, outcome, cfg = hamilton_runs[1_000_000]
    clips = vidpipe.read_table(out, "clips")
    ruled = clips[(clips.status == "ok") | (clips.reason == "no_major_character")]
    frames = int(ruled.n_frames_sampled.sum())
    batch = cfg.major_character.batch_size
    assert len(ruled) >= 3 and frames > batch
    # SCRFD faces and YOLOX people for the rule, over every clip's frames together; the faces
    # and bodies stages reuse what they found.
    assert outcome.model_calls["face_detector"] == math.ceil(frames / batch)
    assert outcome.model_calls["person_detector"] == math.ceil(frames / batch)
    clip_by_clip = hamilton_runs[1][1]
    assert clip_by_clip.model_calls["face_detector"] == sum(math.ceil(n / batch) for n in ruled.n_frames_sampled)


# ---------------------------------------------------------------- registries


def test_registries_refuse_a_second_stage_or_backend_of_the_same_name(counting_stage):
    from vidpipe import registry

    register_stage(CountingStage)  # the same class again (a module imported twice) is no duplicate

    class Impostor(CountingStage):
        pass

    with pytest.raises(ValueError, match="stage 'counting' is registered twice"):
        register_stage(Impostor)
    assert stage_classes()["counting"] is CountingStage

    registry.specs("face_detector")

    def scrfd(ctx):  # a plug-in that takes a built-in backend's name
        return None

    with pytest.raises(ValueError, match="face_detector backend 'scrfd' is registered twice"):
        registry.register("face_detector", "scrfd")(scrfd)
    assert registry.specs("face_detector")["scrfd"].factory is not scrfd


def test_a_removed_plug_in_leaves_no_stale_rows(video, tmp_path):
    register_stage(CountingStage)
    try:
        cfg = Config()
        cfg.set("pipeline.stages", ["counting"])
        vidpipe.run(video, tmp_path / "o", cfg)
        assert len(vidpipe.read_table(tmp_path / "o", "counted")) > 0
    finally:
        stage_module._STAGES.pop(CountingStage.name)  # uninstalled: no stage knows its table now
    cfg = Config()
    cfg.set("pipeline.stages", ["faces"])
    cfg.set("faces.detector", "dlib")
    vidpipe.run(video, tmp_path / "o", cfg)
    assert list((tmp_path / "o" / "counted").glob("*.parquet")) == []
