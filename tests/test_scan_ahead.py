"""The scan-ahead of a serial run: the next file's decode starts while this one's clips are in
the stages, a file done before is not decoded again, scans whose turn never comes stop,
and the store is the same as with each file decoded on its own turn."""

from __future__ import annotations

import time

import pandas as pd

import vidpipe
from synth import make_video
from vidpipe.config import Config
from vidpipe.pipeline import scan as scan_module
from vidpipe.pipeline.ahead import Ahead
from vidpipe.pipeline.runner import VideoProcessor
from vidpipe.pipeline.scan import ScanAhead


def _cfg() -> Config:
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"  # no weights needed
    return cfg.validate()


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _drain(scan) -> int:
    scan.info()
    return sum(1 for _ in scan.shots())


def test_on_done_runs_before_the_consumer_sees_the_end():
    order = []
    ahead = Ahead(iter([1, 2]), 1, on_done=lambda: order.append("done"))
    for item in ahead:
        order.append(item)
    # on_done ran before the end was handed over (after every item was produced; the
    # consumer may still be on the last one)
    assert order in ([1, 2, "done"], [1, "done", 2])


def test_the_next_file_is_scanned_once_this_one_is_decoded(tmp_path):
    videos = [make_video(tmp_path / f"v{i}.mp4", [1.2, 0.8 + i / 5]) for i in range(4)]
    scans = ScanAhead(_cfg(), tmp_path / "out")
    scans.expect(videos)
    scans.start()  # the first file, before any turn
    first = scans.claim(videos[0])
    assert first is not None and first.path == videos[0]
    scans.in_process(first)
    assert _drain(first) == 2
    _wait_for(lambda: scans._ahead)
    # decoded: the next file started; the one after waits, as the next file's shots do not
    # all fit its queue (`run.decode_ahead`) until its turn takes them
    time.sleep(0.3)
    assert [s.path for s in scans._ahead] == [videos[1]]
    second = scans.claim(videos[1])
    assert second is not None and second.path == videos[1]
    scans.in_process(second)
    assert _drain(second) == 2
    _wait_for(lambda: scans._ahead)
    assert [s.path for s in scans._ahead] == [videos[2]]
    leftovers = list(scans._ahead)
    scans.expect(())  # the run ends: scans whose turn never came stop
    assert not scans._ahead
    for s in leftovers:
        assert not s._ahead._thread.is_alive()


def test_a_file_done_before_is_not_scanned_ahead(tmp_path):
    videos = [make_video(tmp_path / f"v{i}.mp4", [1.0 + i / 2]) for i in range(2)]  # different bytes
    out = tmp_path / "out"
    assert vidpipe.run(videos[1], out, _cfg()).count("ok") == 1
    scans = ScanAhead(_cfg(), out)
    scans.expect(videos)
    scans.start()
    first = scans.claim(videos[0])
    scans.in_process(first)
    _drain(first)
    time.sleep(0.3)
    assert not scans._ahead and scans.claim(videos[1]) is None


def test_scanning_ahead_gives_the_same_store_and_overlaps_the_stages(tmp_path, monkeypatch):
    videos = [make_video(tmp_path / f"v{i}.mp4", [1.5, 0.6, 2.0 + i / 5], audio=True) for i in range(3)]
    events: list[tuple[str, str]] = []
    real_init, real_run = scan_module.Scan.__init__, VideoProcessor._run_stages

    def init(self, cfg, path, *args, **kwargs):
        events.append(("scan", path.name))
        real_init(self, cfg, path, *args, **kwargs)

    def run_stages(self, contexts, clock):
        time.sleep(0.2)  # slow stages
        try:
            return real_run(self, contexts, clock)
        finally:
            events.append(("stages done", contexts[0].video.path.name))

    monkeypatch.setattr(scan_module.Scan, "__init__", init)
    monkeypatch.setattr(VideoProcessor, "_run_stages", run_stages)
    assert vidpipe.run(videos, tmp_path / "ahead", _cfg()).count("ok") == 3
    assert sorted(name for kind, name in events if kind == "scan") == ["v0.mp4", "v1.mp4", "v2.mp4"]  # once each
    for before, after in zip(videos, videos[1:]):  # the next file's decode began before this file's stages ended
        assert events.index(("scan", after.name)) < events.index(("stages done", before.name)), events

    stores = [tmp_path / "ahead"]
    for i, video in enumerate(videos):  # each file on its own: nothing to scan ahead
        assert vidpipe.run(video, tmp_path / "alone", _cfg()).count("ok") == 1
    stores.append(tmp_path / "alone")
    for table in ("clips", "faces"):
        a, b = (vidpipe.read_table(s, table).sort_values(["video_id", "clip_id"] if table == "clips" else
                                                         list(vidpipe.read_table(s, table).columns[:3]))
                .reset_index(drop=True) for s in stores)
        pd.testing.assert_frame_equal(a, b)
