"""Long videos in time ranges: the rows are those of processing the whole file, wherever the
ranges start (inside a flash of short cuts, on a cut, inside a shot longer than a range),
parts that disagree are caught, and a killed run resumes range by range."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import vidpipe
from synth import make_video
from vidpipe.config import Config
from vidpipe.pipeline import stage as stage_module
from vidpipe.pipeline.runner import Pipeline, VideoProcessor
from vidpipe.pipeline.stage import ClipContext, Stage, StageResult, register_stage
from vidpipe.pipeline.spans import plan_spans, spans_at
from vidpipe.ranges import MergeTask, RangeTask, merge_ranges, parts_root, process_range
from vidpipe.video import content_id, keyframes, probe

# Shots (seconds): a 41 s shot (longer than a clip, longer than a range), a flash of two
# 0.3 s cuts (the detector's minimum shot length merges them), short and long clips.
SHOTS = [3, 41, 0.3, 0.3, 2, 5, 1.2, 33, 4, 0.6, 7, 2.5, 3, 6, 9, 1.1, 12]


class FrameProbe(Stage):
    """Every sampled frame of every kept clip, by number and time, with a pixel statistic:
    the rows differ if a range numbers, samples or assigns a single frame differently."""

    name = "frame_probe"
    default = False
    order = 99.0
    tables = {"frame_probe": pa.schema([
        ("clip_id", pa.string()), ("frame_index", pa.int32()), ("time_s", pa.float64()), ("mean", pa.float64())])}
    calls = 0

    def process(self, ctx: ClipContext) -> StageResult:
        FrameProbe.calls += 1
        rows = {"clip_id": [ctx.clip.clip_id] * len(ctx.frames), "frame_index": [f.index for f in ctx.frames],
                "time_s": [f.time_s for f in ctx.frames], "mean": [float(f.image.mean()) for f in ctx.frames]}
        return StageResult(rows={"frame_probe": rows})


@pytest.fixture(scope="module", autouse=True)
def probe_stage():
    register_stage(FrameProbe)
    yield
    stage_module._STAGES.pop(FrameProbe.name)


def config(split_s: float) -> Config:
    cfg = Config()
    cfg.set("pipeline.stages", ["frame_probe"])
    cfg.run.executor = "serial"
    cfg.run.split_s = split_s
    return cfg


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", SHOTS, size=(160, 90), keyframe_every=25)


def tables(out: Path) -> dict[str, pd.DataFrame]:
    got = {t: vidpipe.read_table(out, t) for t in ("videos", "clips", "frame_probe")}
    got["videos"] = got["videos"].drop(columns=["timings"])
    return got


@pytest.fixture(scope="module")
def whole(video, tmp_path_factory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("whole")
    assert vidpipe.run(video, out, config(0)).count("ok") == 1
    return tables(out)


def assert_same(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    for table in want:  # row for row, in order
        pd.testing.assert_frame_equal(got[table], want[table], check_exact=True)


def test_a_long_video_in_ranges_gives_the_rows_of_the_whole_video(video, whole, tmp_path, caplog):
    assert len(plan_spans(video, content_id(video), config(11), 11)) >= 8
    caplog.set_level(logging.INFO, logger="vidpipe")
    report = vidpipe.run(video, tmp_path, config(11))
    assert [o.status for o in report.outcomes] == ["ok"]
    assert "merge" in report.outcomes[0].timings  # merged from its parts, not redone whole
    assert "processed in" in caplog.text and "processing it whole" not in caplog.text
    assert_same(tables(tmp_path), whole)
    assert len(whole["clips"]) == 16 and (whole["clips"].n_frames_sampled == 121).any()  # the long shot: 30 s kept
    assert not any((tmp_path / ".ranges").iterdir())  # the parts are gone


def ranges_at(video: Path, out: Path, starts: list[float], split_s: float = 0) -> tuple[VideoProcessor, list[RangeTask]]:
    processor = VideoProcessor(Pipeline.build(config(split_s)), out)
    info = probe(video, content_id(video))
    spans = spans_at(info, processor.cfg, keyframes(info), starts)
    assert len(spans) == len(starts) + 1
    return processor, [RangeTask(str(video), info.video_id, s) for s in spans]


def test_ranges_starting_anywhere_agree_with_the_whole_video(video, whole, tmp_path, caplog):
    starts = [
        20.0,  # inside the 41 s shot: no cut until 44 s, so this range owns no shot
        30.0,  # the same shot again: the range before also runs on to 44 s
        44.15,  # between the two cuts of the flash (the second is suppressed)
        46.64,  # exactly on a cut
        52.9,  # just after a cut, within the detector's minimum shot length
        99.0,
    ]
    processor, tasks = ranges_at(video, tmp_path, starts)
    for task in reversed(tasks):  # any order
        assert process_range(processor, task).status == "range"
    outcome = merge_ranges(processor, MergeTask(tasks[0].path, tasks[0].video_id, len(tasks)))
    assert outcome.status == "ok" and "merge" in outcome.timings and "processing it whole" not in caplog.text
    assert_same(tables(tmp_path), whole)


def test_ranges_that_disagree_are_processed_whole(video, whole, tmp_path, caplog):
    processor, tasks = ranges_at(video, tmp_path, [47.0, 90.0])
    for task in tasks:
        process_range(processor, task)
    marker = parts_root(tmp_path, tasks[0].video_id, processor.config_hash) / "0001" / "range.json"
    record = json.loads(marker.read_text())
    record["start"][1] += 1  # as if the range had numbered its frames one off
    marker.write_text(json.dumps(record))
    outcome = merge_ranges(processor, MergeTask(tasks[0].path, tasks[0].video_id, len(tasks)))
    assert outcome.status == "ok" and "merge" not in outcome.timings
    assert "ranges 0 and 1 disagree" in caplog.text
    assert_same(tables(tmp_path), whole)


def test_a_killed_run_resumes_range_by_range(video, whole, tmp_path):
    processor, tasks = ranges_at(video, tmp_path, [20.0, 47.0, 90.0], split_s=30)
    assert [(t.span.start_s, t.span.end_s) for t in tasks] == [
        (None, 20.0), (20.0, 47.0), (47.0, 90.0), (90.0, None)]
    # The run plans the same ranges from split_s=30 (131 s / 4), so do the first two "before a kill".
    planned = plan_spans(video, tasks[0].video_id, processor.cfg, 30)
    FrameProbe.calls = 0
    for span in planned[:2]:
        process_range(processor, RangeTask(str(video), tasks[0].video_id, span))
    done_before = FrameProbe.calls
    report = vidpipe.run(video, tmp_path, config(30))
    assert report.count("ok") == 1
    kept = int((whole["clips"].status == "ok").sum())
    assert 0 < done_before < kept and FrameProbe.calls == kept  # every clip analysed once in all
    assert_same(tables(tmp_path), whole)
