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
    assert "within 4x decode-only time" in res.stdout and "-> PASS" in res.stdout


def test_failure_is_reported(shared):
    video = shared / "media" / "videos" / "short_hamilton_clip.mp4"
    res = bench("--videos", str(video), "--cmd", "ffmpeg -nostdin -v error -i {video}.missing -f null -")
    assert res.returncode == 1
    assert "FAILED rc=" in res.stdout and "-> FAIL" in res.stdout


def test_missing_video_is_one_line_error():
    res = bench("--videos", "/nonexistent/video.mp4")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: no such file or folder: /nonexistent/video.mp4"
