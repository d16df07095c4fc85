"""The stage contract: a stage written in a test file alone plugs in (its config section, its
table, its clip column, its reject reason) with no edit to the runner, store, API or CLI;
the backend registry; the Detections record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import vidpipe
from synth import make_video
from vidpipe import registry
from vidpipe.backends.base import FACE, HEAD, PERSON, Detections, Detector
from vidpipe.cli import main
from vidpipe.config import Config, ConfigError
from vidpipe.pipeline import stage as stage_module
from vidpipe.pipeline.stage import ClipContext, Stage, StageResult, register_stage


@dataclass
class BrightnessConfig:
    min_brightness: float = 0.0  # clips darker than this are rejected


class BrightnessStage(Stage):
    """A toy stage: the mean brightness of each sampled frame, and a reject rule."""

    name = "brightness"
    config = BrightnessConfig
    order = 99.0
    default = False
    tables = {"brightness": pa.schema([("clip_id", pa.string()), ("time_s", pa.float64()), ("mean", pa.float32())])}
    clip_columns = (pa.field("mean_brightness", pa.float32()),)

    def process(self, ctx: ClipContext) -> StageResult:
        means = np.array([f.image.mean() for f in ctx.frames], np.float32)
        overall = float(means.mean())
        reject = "too dark" if overall < self.options.min_brightness else None
        rows = {"clip_id": [ctx.clip.clip_id] * len(means), "time_s": [f.time_s for f in ctx.frames], "mean": means}
        return StageResult(fields={"mean_brightness": overall}, rows={"brightness": rows}, reject=reject)


@pytest.fixture
def toy_stage():
    register_stage(BrightnessStage)
    yield BrightnessStage
    stage_module._STAGES.pop(BrightnessStage.name)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("v") / "shots.mp4", [2.0, 1.5, 0.5])


def test_a_stage_from_a_test_file_writes_its_table_and_resumes(toy_stage, video, tmp_path):
    cfg = Config()
    cfg.set("pipeline.stages", ["brightness"])
    report = vidpipe.run(video, tmp_path / "o", cfg)
    assert report.count("ok") == 1
    rows = vidpipe.read_table(tmp_path / "o", "brightness")
    clips = vidpipe.read_table(tmp_path / "o", "clips").sort_values("shot_index")
    assert clips.status.tolist() == ["ok", "ok", "rejected"]  # the 0.5 s shot is too short
    assert set(rows.clip_id) == set(clips.clip_id[clips.status == "ok"])
    assert len(rows) == clips.n_frames_sampled[clips.status == "ok"].sum() == 8 + 6
    assert clips.mean_brightness.notna().tolist() == [True, True, False]
    assert vidpipe.read_table(tmp_path / "o", "videos").stages[0].tolist() == ["brightness"]
    before = rows.sort_values(["clip_id", "time_s"]).reset_index(drop=True)
    again = vidpipe.run(video, tmp_path / "o", cfg)
    assert again.count("skipped") == 1
    after = vidpipe.read_table(tmp_path / "o", "brightness").sort_values(["clip_id", "time_s"]).reset_index(drop=True)
    assert after.equals(before)


def test_a_stage_reject_reason_stops_the_clip(toy_stage, video, tmp_path):
    cfg = Config()
    cfg.set("pipeline.stages", ["brightness"])
    cfg.set("brightness.min_brightness", 255.0)
    vidpipe.run(video, tmp_path / "o", cfg)
    clips = vidpipe.read_table(tmp_path / "o", "clips").sort_values("shot_index")
    assert clips.reason.tolist()[:2] == ["too dark", "too dark"] and set(clips.status) == {"rejected"}


def test_the_cli_sets_a_plug_in_stage_options(toy_stage, video, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["run", str(video), "--out", str(out), "-q", "--set", "pipeline.stages=brightness",
                                  "--set", "brightness.min_brightness=300"])
    assert r.exit_code == 0, r.output
    assert set(vidpipe.read_table(out, "clips").reason.dropna()) >= {"too dark"}
    bad = CliRunner().invoke(main, ["run", str(video), "--out", str(out), "--set", "brightness.darkness=1"])
    assert bad.exit_code == 2 and "unknown config key brightness.darkness" in bad.output


def test_switching_a_stage_off_removes_its_rows_of_that_video(toy_stage, video, tmp_path):
    out = tmp_path / "o"
    cfg = Config()
    cfg.set("pipeline.stages", ["brightness"])
    vidpipe.run(video, out, cfg)
    assert len(vidpipe.read_table(out, "brightness")) > 0
    cfg.set("pipeline.stages", ["faces"])
    cfg.set("faces.detector", "dlib")
    vidpipe.run(video, out, cfg)
    assert len(vidpipe.read_table(out, "brightness")) == 0


def test_unknown_stage_is_a_config_error():
    cfg = Config()
    cfg.set("pipeline.stages", ["faces", "telepathy"])
    with pytest.raises(ConfigError, match="unknown stage.*telepathy"):
        cfg.stage_names()


def test_backends_command_lists_stages_and_backends():
    r = CliRunner().invoke(main, ["backends"])
    assert r.exit_code == 0, r.output
    assert "faces" in r.output and "face_detector:" in r.output and "scrfd" in r.output and "dlib" in r.output


# ---------------------------------------------------------------- registry


class _ConstantDetector(Detector):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def detect(self, images):
        return Detections.of([[0, 0, 5, 5]] * len(images), [0.9] * len(images), HEAD, np.arange(len(images)))


@pytest.fixture
def toy_backends(monkeypatch):
    from vidpipe.weights import WeightsNotFound

    registry.specs("head_detector")  # the real backends are loaded, then set aside for this test
    specs: dict = {}
    monkeypatch.setitem(registry._SPECS, "head_detector", specs)

    @registry.register("head_detector", "needs_weights", auto=0)
    def _a(ctx):
        raise WeightsNotFound("weights file toy.onnx (toy) not found; looked in nowhere")

    @registry.register("head_detector", "always", auto=1)
    def _b(ctx):
        return _ConstantDetector("always")

    registry._said.clear()
    return specs


def test_auto_takes_the_first_backend_whose_weights_are_found_and_says_why(toy_backends, caplog):
    provider = registry.Backends(lambda task: ("auto", None))
    with caplog.at_level("INFO", logger="vidpipe"):
        det = provider.get("head_detector")
        assert provider.get("head_detector") is det  # built once
    assert det.name == "always"
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "needs_weights skipped" in said[0] and "toy.onnx" in said[0]
    assert registry.choices("head_detector")[0] == "auto"


def test_model_calls_are_counted():
    det = _ConstantDetector("x")
    det.timed(lambda: None, 3)
    assert (det.stats.calls, det.stats.items) == (1, 3) and det.stats.seconds >= 0


# ---------------------------------------------------------------- Detections


def test_detections_select_merge_and_fill():
    faces = Detections.of([[0, 0, 10, 10], [5, 5, 9, 9]], [0.9, 0.8], FACE, [0, 1],
                          landmarks=np.ones((2, 5, 2), np.float32))
    people = Detections.of([[0, 0, 50, 100]], [0.7], PERSON, 1)
    both = Detections.merge([faces, people])
    assert len(both) == 3 and both.kind.tolist() == [FACE, FACE, PERSON]
    assert both.data["landmarks"].shape == (3, 5, 2) and np.isnan(both.data["landmarks"][2]).all()
    assert both.in_frame(1).kind.tolist() == [FACE, PERSON]
    assert both[both.kind == FACE].area.tolist() == [100.0, 16.0]
    assert both[1].frame.tolist() == [1]
    assert both.shifted(10).frame.tolist() == [10, 11, 11] and both.frame.tolist() == [0, 1, 1]
    assert len(Detections.merge([])) == 0
    with pytest.raises(ValueError, match="has 1 rows, expected 2"):
        Detections.of([[0, 0, 1, 1], [1, 1, 2, 2]], [1, 1], FACE, 0, embedding=np.zeros((1, 4)))
