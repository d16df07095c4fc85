"""The benchmark harness itself, on a real video with ffmpeg standing in for vidpipe:
one table row per file, a TOTAL row, the targets, and failures reported, not hidden."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_run.py"


def bench(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not on PATH")
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)


def test_table_with_ffmpeg_stand_in(shared):
    video = shared / "media" / "videos" / "short_hamilton_clip.mp4"
    res = bench("--videos", str(video), "--markdown", "--cmd", "ffmpeg -nostdin -v error -i {video} -f null -")
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| video | video s | wall s")
    assert rows[1].startswith("| short_hamilton_clip.mp4 | 10.0 |")
    assert rows[2].startswith("| TOTAL | 10.0 |")
    peak_mb = float(rows[1].split("|")[7])
    assert 5 < peak_mb < 2000
    assert "within 3x decode-only time" in res.stdout and "-> PASS" in res.stdout
    assert "GPU utilisation during that run: no GPU here" in res.stdout


def test_failure_is_reported(shared):
    video = shared / "media" / "videos" / "short_hamilton_clip.mp4"
    res = bench("--videos", str(video), "--cmd", "ffmpeg -nostdin -v error -i {video}.missing -f null -")
    assert res.returncode == 1
    assert "FAILED rc=" in res.stdout and "-> FAIL" in res.stdout


def test_missing_video_is_one_line_error():
    res = bench("--videos", "/nonexistent/video.mp4")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: no such file or folder: /nonexistent/video.mp4"


def test_time_by_part_from_the_store(tmp_path):
    """The breakdown reads `videos.timings` of the run's store and sums the files: overhead is
    everything the pipeline timed over decode + model time; no store, no table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(BENCH.parent))
    import bench_run

    store = tmp_path / "features"
    (store / "videos").mkdir(parents=True)
    timings = pa.array([[("decode", 2.0), ("shots", 0.5), ("faces", 3.0), ("write", 0.5), ("model", 2.0)]],
                       pa.map_(pa.string(), pa.float64()))
    pq.write_table(pa.table({"timings": timings}), store / "videos" / "v.parquet")
    t = bench_run.store_timings(store)
    assert t == {"decode": 2.0, "shots": 0.5, "faces": 3.0, "write": 0.5, "model": 2.0}
    ok, failed = bench_run.Run(9, 9, 100, 0), bench_run.Run(1, 1, 10, 0)
    rows = [bench_run.Row("a.mp4", 10, ok, failed, t), bench_run.Row("b.mp4", 10, ok, failed, t)]
    text = bench_run.breakdown(rows, markdown=True)
    assert "| video | decode | shots | faces | write | model | overhead |" in text
    assert "| TOTAL | 4.00 | 1.00 | 6.00 | 1.00 | 4.00 | 1.50 |" in text  # (4+1+6+1) / (4+4)
    assert bench_run.breakdown([bench_run.Row("c.mp4", 10, ok, failed, bench_run.store_timings(tmp_path))], True) == ""
