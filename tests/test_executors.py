"""Executors: serial, local processes and Ray run the same items, follow-up items included,
and write the same store; Ray retries a worker killed mid-video without duplicates. Ray
tests start a private 2-CPU Ray on the loopback interface and skip when Ray is absent."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import vidpipe
from synth import make_video
from vidpipe.api import _ray_options
from vidpipe.cli import main
from vidpipe.config import Config, ConfigError
from vidpipe.executors import get_executor, threads_per_worker
from vidpipe.pipeline.runner import Pipeline


def _double(item, progress):
    return item * 2


def _make_double():
    return _double


def run_map(executor) -> list[int]:
    """Items 1..3; each result under 10 leads to one more item (as a long video leads to its ranges)."""
    results: list[int] = []

    def on_result(result):
        results.append(result)
        return [result + 1] if result < 10 else []

    executor.map(_make_double, [1, 2, 3], on_result)
    return sorted(results)


# item -> result: 1 -> 2, 3 -> 6, 7 -> 14;  2 -> 4, 5 -> 10;  3 -> 6, 7 -> 14
EXPECTED = [2, 4, 6, 6, 10, 14, 14]


@pytest.mark.parametrize("name", ["serial", "processes"])
def test_local_executors_run_follow_up_items(name):
    assert run_map(get_executor(name, workers=2)) == EXPECTED


def test_unknown_executor_and_threads_split():
    with pytest.raises(ValueError, match="choose from serial, processes, ray"):
        get_executor("dask")
    assert threads_per_worker(1) == 0  # one worker: every library's own default
    assert threads_per_worker(2, threads=3) == 3
    assert threads_per_worker(os.cpu_count() * 4) == 1


def test_ray_resources_follow_the_stages():
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"
    cfg.run.threads, cfg.run.gpus_per_worker = 2, 0.25
    pipeline = Pipeline.build(cfg)
    assert _ray_options(cfg, pipeline) == {"address": None, "num_cpus": 2, "num_gpus": 0.25}
    cfg.run.device = "cpu"  # models on the CPU: no GPU asked for
    assert _ray_options(cfg, pipeline)["num_gpus"] == 0.0


def test_ray_missing_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    make_video(tmp_path / "a.mp4", [1.0])
    result = CliRunner().invoke(main, ["run", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "o"),
                                       "--executor", "ray", "--face-backend", "dlib", "-q"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "vidpipe: error: the Ray executor needs Ray: pip install 'vidpipe[ray]'"
    with pytest.raises(ConfigError):
        get_executor("ray").map(_make_double, [1], lambda r: None)


# ---------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_local():
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every port on loopback
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:  # workers import this module's functions by name
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield ray
    ray.shutdown()


def test_ray_runs_follow_up_items(ray_local):
    assert run_map(get_executor("ray", workers=2)) == EXPECTED


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    make_video(d / "a.mp4", [2.0, 0.6, 3.0])
    make_video(d / "b.mkv", [1.5, 2.5], size=(160, 90))
    make_video(d / "long.mp4", [3, 14, 0.3, 0.3, 2, 5, 1.2, 9, 4, 7, 2.5], size=(160, 90), keyframe_every=25)
    return d


def cheap(executor: str, workers: int = 1) -> Config:
    cfg = Config()
    cfg.faces.detector = cfg.faces.embedder = "dlib"  # weights from PyPI
    cfg.run.executor, cfg.run.workers, cfg.run.split_s = executor, workers, 12.0  # long.mp4 (49 s) in 4 ranges
    return cfg


def tables(out: Path) -> dict[str, pd.DataFrame]:
    keys = {"videos": ["video_id"], "clips": ["clip_id"], "faces": ["clip_id", "rank", "time_s"]}
    got = {t: vidpipe.read_table(out, t).sort_values(k).reset_index(drop=True) for t, k in keys.items()}
    got["videos"] = got["videos"].drop(columns=["timings", "path"])
    return got


@pytest.fixture(scope="module")
def serial_store(videos, tmp_path_factory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("serial")
    assert vidpipe.run(videos, out, cheap("serial")).count("ok") == 3
    return tables(out)


def test_ray_writes_the_store_the_local_executor_writes(ray_local, videos, serial_store, tmp_path):
    report = vidpipe.run(videos, tmp_path, cheap("ray", workers=2))
    assert [o.status for o in report.outcomes] == ["ok"] * 3
    assert "merge" in next(o for o in report.outcomes if o.path.endswith("long.mp4")).timings  # ran in ranges
    got = tables(tmp_path)
    for table, want in serial_store.items():
        pd.testing.assert_frame_equal(got[table], want)


def lock_holder(lock: Path) -> int | None:
    """The pid holding an flock on `lock` (Linux /proc/locks), if any."""
    inode = lock.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "FLOCK" in parts and parts[-3].split(":")[-1] == str(inode):
            return int(parts[parts.index("FLOCK") + 3])
    return None


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to find the worker")
def test_ray_retries_a_worker_killed_mid_video(ray_local, videos, serial_store, tmp_path):
    cfg = cheap("ray", workers=2)
    cfg.run.split_s = 0  # whole videos: kill the worker holding one
    video_ids = dict(zip(serial_store["videos"].video_id, serial_store["videos"].n_clips))
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for lock in (tmp_path / ".locks").glob("*.lock") if (tmp_path / ".locks").exists() else ():
                if lock.stem in video_ids and (pid := lock_holder(lock)) is not None and pid != os.getpid():
                    time.sleep(0.3)  # well inside the video
                    if lock_holder(lock) == pid:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    report = vidpipe.run(videos, tmp_path, cfg)
    killer.join()
    assert killed, "no worker was caught holding a video"
    assert [o.status for o in report.outcomes] == ["ok"] * 3
    got = tables(tmp_path)
    assert got["clips"].clip_id.is_unique and got["videos"].video_id.is_unique
    for table, want in serial_store.items():
        pd.testing.assert_frame_equal(got[table], want)
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
