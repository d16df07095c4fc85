"""Throughput of `vidpipe run` on this machine: video-hours per hour for 1 and 2 workers with
the local executor and with Ray, scaling, CPU use, a stage breakdown, the ratio to
decode-only time, and peak memory per worker on a long video against a short one.

    python benchmarks/bench_throughput.py [--videos FILE_OR_DIR ...] [--runs local:1,local:2,ray:1,ray:2]
                                          [--long-hours 2] [--short-minutes 10] [--no-long]
                                          [--out DIR] [--markdown] [-- EXTRA VIDPIPE OPTIONS]

Every run is one `python -m vidpipe run VIDEOS --out FRESH --quiet --workers N --executor E`
child process on all the videos (as a user runs it, start-up included). CPU seconds and peak
memory cover the child's whole process tree: `os.wait4` for what it waited for, and /proc
polled every 0.1 s for what it did not (Ray's worker processes). The default videos are four
distinct ~30 s videos stream-copied from ../shared/media; the long videos loop one shared video
by stream copy (made in a temporary folder, never kept). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import store_timings  # noqa: E402  (videos.timings summed over a store's videos)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDPIPE_SHARED", REPO.parent / "shared"))
VIDEOS = SHARED / "media" / "videos"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CORES = os.cpu_count() or 1
# Targets (issue 11).
BUSY = 0.90  # one worker: CPU seconds >= 90% of wall x cores
SCALING = 1.0  # 2 workers >= 1.0x one worker's throughput
RAY_GAP = 0.15  # Ray on one machine within 15% of the local executor
FLAT = 0.10  # peak memory per worker on the long video within 10% of the short one


class BenchError(Exception):
    pass


@dataclass
class Usage:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_mb: float = 0.0  # the largest single process of the tree
    rc: int = 0
    err: str = ""


@dataclass
class Run:
    name: str
    executor: str
    workers: int
    usage: Usage
    video_s: float
    timings: dict[str, float] = field(default_factory=dict)  # summed over the videos
    startup_s: float = 0.0  # the same command on no video: interpreter, imports, models, Ray
    startup_cpu_s: float = 0.0

    @property
    def video_h_per_h(self) -> float:
        return self.video_s / self.usage.wall_s if self.usage.wall_s else 0.0

    @property
    def steady_h_per_h(self) -> float:
        """Without the start-up: what a long run approaches."""
        busy = self.usage.wall_s - self.startup_s
        return self.video_s / busy if busy > 0 else 0.0

    @property
    def busy_steady(self) -> float:
        """CPU use of the whole tree without the start-up: (CPU - start-up CPU) / ((wall -
        start-up wall) x cores), the share of the machine kept busy while videos are processed."""
        wall = self.usage.wall_s - self.startup_s
        return (self.usage.cpu_s - self.startup_cpu_s) / (wall * CORES) if wall > 0 else 0.0

    @property
    def core_h_per_video_h(self) -> float:
        """CPU hours of the whole process tree per hour of video, start-up excluded."""
        return (self.usage.cpu_s - self.startup_cpu_s) / self.video_s


def _proc_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, CPU seconds, resident MB) for every process we can read."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid ... utime(12) stime(13) ... rss(22) (0-based from state)
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE / 2**20)
    return table


class TreeWatch:
    """Polls the process tree under `root`: CPU seconds and peak resident memory per pid."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root, self.interval = root, interval
        self.cpu: dict[int, float] = {}
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            table = _proc_table()
            tree, grew = {self.root}, True
            while grew:
                more = {pid for pid, (ppid, _, _) in table.items() if ppid in tree and pid not in tree}
                tree |= more
                grew = bool(more)
            for pid in tree & table.keys():
                _, cpu, rss = table[pid]
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
                self.peak[pid] = max(self.peak.get(pid, 0.0), rss)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def timed(cmd: list[str], log: Path | None = None) -> Usage:
    """Run `cmd` as one child; wall, CPU and peak memory of its whole tree."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(log or os.devnull, "wb") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
        except OSError as e:
            raise BenchError(f"cannot start {cmd[0]}: {e.strerror}") from None
        watch = TreeWatch(proc.pid)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        watch.stop()
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    waited_cpu = ru.ru_utime + ru.ru_stime  # the child and every descendant it waited for
    polled_cpu = sum(watch.cpu.values())  # also those it did not wait for (may miss the last 0.1 s)
    peak = max([ru.ru_maxrss / 1024, *watch.peak.values()])
    tail = ""
    if rc and log is not None:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = lines[-1] if lines else ""
    return Usage(wall, max(waited_cpu, polled_cpu), peak, rc, tail)


def ffmpeg(*args: str) -> None:
    res = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], capture_output=True, text=True)
    if res.returncode:
        raise BenchError(f"ffmpeg {' '.join(args)}: {res.stderr.strip().splitlines()[-1:]}")


def duration_s(path: Path) -> float:
    res = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True)
    try:
        return float(res.stdout.strip())
    except ValueError:
        raise BenchError(f"ffprobe cannot read {path}") from None


def default_videos(work: Path) -> list[Path]:
    """Four distinct ~30 s videos, stream-copied from the shared media (people and faces)."""
    if not VIDEOS.is_dir():
        raise BenchError(f"no videos given and {VIDEOS} is absent")
    out = work / "videos"
    out.mkdir()
    ffmpeg("-stream_loop", "2", "-i", str(VIDEOS / "short_hamilton_clip.mp4"), "-c", "copy", str(out / "hamilton_x3.mp4"))
    ffmpeg("-i", str(VIDEOS / "pyscenedetect" / "testvideo.mp4"), "-c", "copy", str(out / "testvideo.mp4"))
    ffmpeg("-i", str(VIDEOS / "mgt_dancer.avi"), "-t", "30", "-c", "copy", str(out / "dancer_30s.avi"))
    ffmpeg("-i", str(VIDEOS / "vtest_opencv_reencoded.avi"), "-t", "30", "-c", "copy", str(out / "vtest_30s.avi"))
    return sorted(out.iterdir())


def looped(source: Path, seconds: float, work: Path) -> Path:
    """`source` looped to `seconds` by stream copy (same codec and frames, no re-encode)."""
    loops = max(0, int(seconds // duration_s(source)))
    out = work / f"{source.stem}_{seconds / 60:g}min{source.suffix}"
    ffmpeg("-stream_loop", str(loops), "-i", str(source), "-t", str(seconds), "-c", "copy", str(out))
    return out


def vidpipe_cmd(videos: list[Path], out: Path, executor: str, workers: int | str, extra: list[str]) -> list[str]:
    weights = ["--weights", str(SHARED / "weights")] if (SHARED / "weights").is_dir() else []  # else dlib + HOG
    return [sys.executable, "-m", "vidpipe", "run", *map(str, videos), "--out", str(out), "--quiet",
            "--executor", executor, "--workers", str(workers), *weights, *extra]


def bench(name: str, videos: list[Path], executor: str, workers: int, extra: list[str], base: Path) -> Run:
    print(f"running {name} ({executor}, {workers} worker{'s' * (workers > 1)}) ...", file=sys.stderr, flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    usage = timed(vidpipe_cmd(videos, work / "features", executor, workers, extra), log=work / "stderr.log")
    if usage.rc:
        print(f"  {name}: rc={usage.rc}: {usage.err}", file=sys.stderr)
    timings = store_timings(work / "features") if usage.rc == 0 else {}
    (work / "none").mkdir()
    startup = timed(vidpipe_cmd([work / "none"], work / "startup", executor, workers, extra))
    return Run(name, executor, workers, usage, sum(duration_s(v) for v in videos), timings, startup.wall_s,
               startup.cpu_s)


def fmt_table(head: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, body)])


def report(runs: list[Run], decode_s: float, scan: Run | None, long_runs: list[Run], markdown: bool) -> str:
    out = []
    one = {r.executor: r for r in runs if r.workers == 1 and not r.usage.rc}
    head = ["run", "wall s", "video h/h", "start-up s", "video h/h w/o start-up", "speed-up", "efficiency", "CPU s",
            "CPU/(wall x cores) (w/o start-up)", "core-h/video-h", "peak MB/worker", "wall/decode"]
    body = []
    for r in runs:
        if r.usage.rc:
            body.append([r.name, "FAILED", *[""] * (len(head) - 2)])
            continue
        base = one.get(r.executor)
        speedup = r.steady_h_per_h / base.steady_h_per_h if base else float("nan")
        body.append([r.name, f"{r.usage.wall_s:.1f}", f"{r.video_h_per_h:.2f}", f"{r.startup_s:.1f}",
                     f"{r.steady_h_per_h:.2f}",
                     f"{speedup:.2f}", f"{speedup / r.workers:.0%}", f"{r.usage.cpu_s:.1f}",
                     f"{r.usage.cpu_s / (r.usage.wall_s * CORES):.0%} ({r.busy_steady:.0%})", f"{r.core_h_per_video_h:.3f}",
                     f"{r.usage.peak_mb:.0f}",
                     f"{r.usage.wall_s / decode_s:.1f}"])
    out.append(fmt_table(head, body, markdown))
    out.append(f"\n(video h/h = hours of video per hour of wall time, start-up included; start-up = the same "
               f"command on an empty folder; speed-up (start-up excluded) against one worker of the same executor, "
               f"efficiency = speed-up / workers; core-h/video-h = CPU hours of the "
               f"whole process tree per hour of video, start-up excluded; {CORES} cores; "
               f"decode-only (ffmpeg -f null) {decode_s:.1f} s for all videos)")

    if scan is not None and not scan.usage.rc:
        out.append(f"\nThe scan alone (decode + shot detection + write; every clip rejected, so no stage runs; "
                   f"one worker): {scan.core_h_per_video_h:.3f} core-h/video-h, {scan.video_h_per_h:.1f} video h/h, "
                   f"wall/decode {scan.usage.wall_s / decode_s:.1f} — the part that stays on the CPU when models "
                   f"run on a GPU.")
    parts = sorted({p for r in runs for p in r.timings} - {"model"}, key=lambda p: (p not in ("decode", "shots"), p))
    if parts:
        out.append("\nStage breakdown (wall seconds per video-hour, summed over workers; decode and shots run "
                   "on their own thread, overlapping the stages):")
        head = ["run", *parts, "model (inference)"]
        body = [[r.name, *(f"{r.timings.get(p, 0) * 3600 / r.video_s:.0f}" for p in parts),
                 f"{r.timings.get('model', 0) * 3600 / r.video_s:.0f}"] for r in runs if r.timings]
        out.append(fmt_table(head, body, markdown))

    b = "- " if markdown else "  "
    out.append("\nTargets (issue 11; throughput without start-up, with it in brackets; timings are noisy on a shared "
               "machine: compare ratios):")
    local1, local2, ray1, ray2 = (next((r for r in runs if (r.executor, r.workers) == k and not r.usage.rc), None)
                                  for k in [("processes", 1), ("processes", 2), ("ray", 1), ("ray", 2)])
    if local1:
        busy = local1.usage.cpu_s / (local1.usage.wall_s * CORES)
        steady = local1.busy_steady
        out.append(f"{b}one worker keeps the machine busy: CPU {local1.usage.cpu_s:.1f} s / (wall {local1.usage.wall_s:.1f} s "
                   f"x {CORES} cores) = {busy:.0%}; without the start-up {steady:.0%} (target >= {BUSY:.0%}) -> "
                   f"{'PASS' if busy >= BUSY else 'PASS without the start-up' if steady >= BUSY else 'FAIL'}")
    for pair, label in (((local1, local2), "local"), ((ray1, ray2), "Ray")):
        if all(pair):
            s = pair[1].steady_h_per_h / pair[0].steady_h_per_h
            out.append(f"{b}{label}: 2 workers / 1 worker throughput = {s:.2f}x "
                       f"({pair[1].video_h_per_h / pair[0].video_h_per_h:.2f}x) (target >= {SCALING:.1f}x) "
                       f"-> {'PASS' if s >= SCALING else 'FAIL'}")
    for ray, local in ((ray1, local1), (ray2, local2)):
        if ray and local:
            gap = ray.steady_h_per_h / local.steady_h_per_h
            out.append(f"{b}Ray {ray.workers} worker(s) / local = {gap:.2f}x ({ray.video_h_per_h / local.video_h_per_h:.2f}x) "
                       f"(target >= {1 - RAY_GAP:.2f}x) -> {'PASS' if gap >= 1 - RAY_GAP else 'FAIL'}")
    if len(long_runs) == 2 and not any(r.usage.rc for r in long_runs):
        short, long = long_runs
        grow = long.usage.peak_mb / short.usage.peak_mb - 1
        out.append(f"{b}peak memory per worker: {short.video_s / 60:.0f} min video {short.usage.peak_mb:.0f} MB, "
                   f"{long.video_s / 3600:.1f} h video {long.usage.peak_mb:.0f} MB -> {grow:+.1%} (target <= "
                   f"{FLAT:.0%}) -> {'PASS' if grow <= FLAT else 'FAIL'}")
        for r in long_runs:
            out.append(f"{b}  {r.name}: {r.video_s / 3600:.2f} h of video in {r.usage.wall_s / 3600:.2f} h = "
                       f"{r.video_h_per_h:.2f} video h/h, CPU {r.usage.cpu_s / (r.usage.wall_s * CORES):.0%}, "
                       f"{r.core_h_per_video_h:.3f} core-h/video-h")
    elif long_runs:
        out.append(f"{b}peak memory per worker: a long run failed -> FAIL")
    return "\n".join(out)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--videos", nargs="+", help="video files or folders (default: four ~30 s videos from ../shared)")
    p.add_argument("--runs", default="processes:1,processes:2,ray:1,ray:2",
                   help="EXECUTOR:WORKERS,... ('' for none: the long videos alone; default: %(default)s)")
    p.add_argument("--long-source", default=str(VIDEOS / "short_hamilton_clip.mp4"),
                   help="video looped into the long ones (default: %(default)s)")
    p.add_argument("--long-hours", type=float, default=2.0, help="the long video (default: %(default)s h)")
    p.add_argument("--short-minutes", type=float, default=10.0, help="the short one it is compared with (default: 10)")
    p.add_argument("--no-long", action="store_true", help="skip the long-video memory runs")
    p.add_argument("--no-scan", action="store_true", help="skip the run without stages (decode + shots alone)")
    p.add_argument("--out", help="keep every run's store and stderr.log here (default: a temporary folder)")
    p.add_argument("--markdown", action="store_true", help="tables as markdown")
    head, tail = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args, unknown = p.parse_known_args(head)
    return args, unknown + tail


def find_videos(items: list[str]) -> list[Path]:
    exts = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts"}
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            out += sorted(f for f in item.rglob("*") if f.suffix.lower() in exts)
        elif item.is_file():
            out.append(item)
        else:
            raise BenchError(f"no such file or folder: {item}")
    return out


def main(argv: list[str]) -> int:
    args, extra = parse(argv)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise BenchError(f"`{tool}` not found on PATH (Debian: apt-get install ffmpeg)")
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="vidpipe-throughput-")
    base = Path(args.out or tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    try:
        videos = find_videos(args.videos) if args.videos else default_videos(base)
        for v in videos:
            v.read_bytes()  # page cache warm for every run alike
        print("decode-only ...", file=sys.stderr, flush=True)
        decode_s = sum(timed(["ffmpeg", "-nostdin", "-v", "error", "-i", str(v), "-f", "null", "-"]).wall_s for v in videos)
        video_s = sum(duration_s(v) for v in videos)
        runs = []
        for spec in filter(None, args.runs.split(",")):
            executor, _, workers = spec.partition(":")
            runs.append(bench(f"{executor}:{workers}", videos, executor, int(workers or 1), extra, base))
        scan = None if args.no_scan else bench("scan:1", videos, "processes", 1, [*extra, "--max-clip", "0"], base)
        long_runs = []
        if not args.no_long:
            source = Path(args.long_source)
            for seconds, name in ((args.short_minutes * 60, f"long:{args.short_minutes:g}min"),
                                  (args.long_hours * 3600, f"long:{args.long_hours:g}h")):
                print(f"making {name} ...", file=sys.stderr, flush=True)
                video = looped(source, seconds, base)
                long_runs.append(bench(name, [video], "processes", 1, extra, base))
                video.unlink()
    finally:
        if tmp:
            tmp.cleanup()
    shown = shlex.join(vidpipe_cmd([Path("VIDEOS")], Path("OUT"), "EXECUTOR", "N", extra)).replace(sys.executable, "python")
    print(("`" + shown + "`" if args.markdown else "command: " + shown) + f"  ({len(videos)} videos, "
          f"{video_s:.0f} s of video; load average {os.getloadavg()[0]:.1f} at the end)\n")
    print(report(runs, decode_s, scan, long_runs, args.markdown))
    return 1 if any(r.usage.rc for r in runs + long_runs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
