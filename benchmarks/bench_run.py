"""Benchmark `vidpipe run` per video: wall time, real-time factor, ratio to ffmpeg's
decode-only time, peak memory, and where the time goes (decode, shots, each stage, write,
and the pure inference seconds of every network call, from the store's `videos.timings`),
against the targets in our issues.

    python benchmarks/bench_run.py [--videos DIR_OR_FILE ...] [--out DIR] [--config FILE]
                                   [--markdown] [--cmd TEMPLATE] [-- EXTRA VIDPIPE OPTIONS]

Each file runs alone in its own child process with a fresh output folder (so resume
skips nothing). Peak memory is the kernel's high-water mark for that child, read with
os.wait4 on its pid: exact (no polling misses a spike) and per file (unlike
RUSAGE_CHILDREN, which is a max over every child this script ever waited for). It is
the largest single process of the child's tree, not the sum of concurrent workers.
Options this script does not know, and anything after `--`, go to vidpipe unchanged.
See benchmarks/README.md for the columns.
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDPIPE_SHARED", REPO.parent / "shared"))
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv"}
DEFAULT_CMD = f"{shlex.quote(sys.executable)} -m vidpipe run {{video}} --out {{out}} --quiet"
if (SHARED / "weights").is_dir():  # the real models; without them vidpipe falls back to dlib + HOG
    DEFAULT_CMD += f" --weights {shlex.quote(str(SHARED / 'weights'))}"
DECODE_TARGET = 3.0  # whole run within 3x decode-only time (issue 16)
FLAT_TOLERANCE = 0.10  # peak memory of the whole video within 10% of its first 10 s
OVERHEAD_TARGET = 1.15  # the pipeline's parts within 1.15x (decode + model time) (issue 16)
PREFIX_S = 10.0


class BenchError(Exception):
    pass


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_mb: float
    rc: int
    err: str = ""


@dataclass
class Row:
    name: str
    video_s: float
    run: Run
    decode: Run
    timings: dict[str, float] = field(default_factory=dict)  # videos.timings of the run's store


def store_timings(store: Path) -> dict[str, float]:
    """Wall seconds per part (decode, shots, each stage, write) and `model`, summed over the
    store's videos; empty when the command wrote no store (e.g. an ffmpeg stand-in)."""
    try:
        import pyarrow.parquet as pq

        column = pq.read_table(store / "videos", columns=["timings"]).column("timings").to_pylist()
    except Exception:  # no store, or not vidpipe's
        return {}
    totals: dict[str, float] = {}
    for row in column:
        for part, seconds in row or ():
            totals[part] = totals.get(part, 0.0) + seconds
    return totals


def timed(cmd: list[str], log: Path | None = None) -> Run:
    """Run cmd as one child; wall time, CPU time and peak RSS of that child alone."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(log or os.devnull, "wb") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
        except OSError as e:
            raise BenchError(f"cannot start {cmd[0]}: {e.strerror}") from None
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = rc = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    maxrss = ru.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    tail = ""
    if rc != 0 and log is not None:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = lines[-1] if lines else ""
    return Run(wall, ru.ru_utime + ru.ru_stime, maxrss, rc, tail)


def duration_s(path: Path) -> float:
    res = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True,
    )
    try:
        return float(res.stdout.strip())
    except ValueError:
        raise BenchError(f"ffprobe cannot read the duration of {path}: {res.stderr.strip() or res.stdout.strip()}") from None


def find_videos(items: list[str]) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTS)
        elif p.is_file():
            out.append(p)
        else:
            raise BenchError(f"no such file or folder: {p}")
    if not out:
        raise BenchError(f"no videos found in {' '.join(items)}")
    return out


def command(template: str, videos: list[Path], out: Path, extra: list[str]) -> list[str]:
    """The command line for these videos: the {video} argument expands to every file."""
    cmd: list[str] = []
    for arg in shlex.split(template):
        cmd += [str(v) for v in videos] if arg == "{video}" else [arg.replace("{out}", str(out))]
    return cmd + extra


class GpuWatch:
    """GPU utilisation (nvidia-smi, every 0.5 s) while a run goes on; nothing without a GPU."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True) if shutil.which("nvidia-smi") else None

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            values = [float(v) for v in out.stdout.split() if v.replace(".", "", 1).isdigit()]
            if values:
                self.samples.append(sum(values) / len(values))

    def __enter__(self) -> "GpuWatch":
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> str:
        if self._thread is None:
            return "no GPU here (nvidia-smi not found)"
        if not self.samples:
            return "no nvidia-smi sample"
        return f"mean {sum(self.samples) / len(self.samples):.0f}%, max {max(self.samples):.0f}% ({len(self.samples)} samples)"


def bench_whole(videos: list[Path], template: str, extra: list[str], base: Path) -> tuple[Run, Run, GpuWatch]:
    """All files in one process, as a user runs it, and the same command on no file
    (interpreter start-up and model loading alone)."""
    work = Path(tempfile.mkdtemp(prefix="whole-", dir=base))
    empty = work / "no-videos"
    empty.mkdir()
    startup = timed(command(template, [empty], work / "startup", extra), log=work / "startup.log")
    with GpuWatch() as gpu:
        whole = timed(command(template, videos, work / "features", extra), log=work / "stderr.log")
    return whole, startup, gpu


def bench_one(video: Path, name: str, template: str, extra: list[str], base: Path) -> Row:
    """Decode-only time with ffmpeg, then the command on the same file in a fresh output folder."""
    video.read_bytes()  # warm the page cache so neither run pays for the disk
    decode = timed(["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-f", "null", "-"])
    work = Path(tempfile.mkdtemp(prefix=f"{video.stem}-", dir=base))
    run = timed(command(template, [video], work / "features", extra), log=work / "stderr.log")
    return Row(name, duration_s(video), run, decode, store_timings(work / "features"))


def prefix_copy(video: Path, seconds: float, base: Path) -> Path:
    """The first `seconds` of video, stream-copied (same codec, same frames) for the flatness check."""
    out = Path(tempfile.mkdtemp(prefix="prefix-", dir=base)) / f"{video.stem}-first{seconds:g}s{video.suffix}"
    res = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-t", str(seconds), "-map", "0:v", "-map", "0:a?",
         "-c", "copy", str(out)],
        capture_output=True, text=True,
    )
    if res.returncode != 0:
        raise BenchError(f"cannot cut the first {seconds:g} s of {video}: {res.stderr.strip().splitlines()[-1:]}")
    return out


def table(rows: list[Row], markdown: bool) -> str:
    head = ["video", "video s", "wall s", "RTF x", "decode s", "wall/decode", "peak MB", "cpu s"]

    def cells(name, vs, run_wall, dec_wall, peak, cpu, failed=""):
        if failed:
            return [name, f"{vs:.1f}", failed, "", f"{dec_wall:.2f}", "", f"{peak:.0f}", f"{cpu:.1f}"]
        return [name, f"{vs:.1f}", f"{run_wall:.2f}", f"{vs / run_wall:.2f}", f"{dec_wall:.2f}",
                f"{run_wall / dec_wall:.1f}", f"{peak:.0f}", f"{cpu:.1f}"]

    body = [cells(r.name, r.video_s, r.run.wall_s, r.decode.wall_s, r.run.peak_mb, r.run.cpu_s,
                  f"FAILED rc={r.run.rc}" if r.run.rc else "") for r in rows]
    ok = [r for r in rows if r.run.rc == 0]
    if ok:
        body.append(cells("TOTAL" + (f" ({len(ok)} ok)" if len(ok) < len(rows) else ""),
                          sum(r.video_s for r in ok), sum(r.run.wall_s for r in ok), sum(r.decode.wall_s for r in ok),
                          max(r.run.peak_mb for r in ok), sum(r.run.cpu_s for r in ok)))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda c: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths)))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(c) for c in body])


def breakdown(rows: list[Row], markdown: bool) -> str:
    """Seconds per part and file, from `videos.timings` (decode runs on its own thread, ahead
    of the stages, so the parts may sum to more than the wall time), and the overhead:
    everything the pipeline did / (decode + model time)."""
    timed_rows = [r for r in rows if r.timings and not r.run.rc]
    if not timed_rows:
        return ""
    first = ["decode", "shots"]
    parts = first + sorted({p for r in timed_rows for p in r.timings} - {*first, "write", "model"}) + ["write"]
    head = ["video", *parts, "model", "overhead"]

    def cells(name: str, t: dict[str, float]) -> list[str]:
        work = sum(t.get(p, 0.0) for p in parts)
        base = t.get("decode", 0.0) + t.get("model", 0.0)
        return [name, *(f"{t.get(p, 0.0):.2f}" for p in parts), f"{t.get('model', 0.0):.2f}",
                f"{work / base:.2f}" if base else ""]

    total: dict[str, float] = {}
    for r in timed_rows:
        for p, v in r.timings.items():
            total[p] = total.get(p, 0.0) + v
    body = [cells(r.name, r.timings) for r in timed_rows] + [cells("TOTAL", total)]
    title = (f"\nTime by part (s, from videos.timings; model = inference inside the stages; "
             f"overhead = parts / (decode + model), target <= {OVERHEAD_TARGET:g}):")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        return "\n".join([title, "", *lines, *("| " + " | ".join(c) + " |" for c in body)])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda c: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths)))  # noqa: E731
    return "\n".join([title, fmt(head), "  ".join("-" * w for w in widths)] + [fmt(c) for c in body])


def targets(rows: list[Row], flat: tuple[Row, Row] | None, whole: tuple[Run, Run, "GpuWatch"], markdown: bool) -> str:
    ok = [r for r in rows if r.run.rc == 0]
    b, sub = ("- ", "  - ") if markdown else ("  ", "      ")
    lines = ["", "Targets (issue):"]
    if ok:
        decode = sum(r.decode.wall_s for r in rows)
        run, startup, gpu = whole
        ratio = run.wall_s / decode
        verdict = "PASS" if ratio <= DECODE_TARGET and run.rc == 0 and len(ok) == len(rows) else "FAIL"
        lines.append(f"{b}whole run within {DECODE_TARGET:g}x decode-only time: all {len(rows)} files in one process "
                     f"{run.wall_s:.2f} s (peak {run.peak_mb:.0f} MB) / decode {decode:.2f} s = {ratio:.1f}x -> {verdict}")
        lines.append(f"{sub}of which start-up (interpreter, imports, model loading; no video): {startup.wall_s:.2f} s; "
                     f"per-file rows above each pay it once: {(run.wall_s - startup.wall_s) / decode:.1f}x without it")
        lines.append(f"{sub}GPU utilisation during that run: {gpu.summary()}")
    else:
        lines.append(f"{b}whole run within {DECODE_TARGET:g}x decode-only time: no successful run -> FAIL")
    for r in rows:
        if r.run.rc:
            lines.append(f"{sub}FAILED {r.name} (rc={r.run.rc}): {r.run.err}")
    lines.append(f"{b}peak memory flat in video length (peak MB by duration, same command):")
    for r in sorted(ok, key=lambda r: r.video_s):
        lines.append(f"{sub}{r.video_s:7.1f} s  {r.run.peak_mb:7.0f} MB  {r.name}")
    if flat:
        short, full = flat
        if short.run.rc or full.run.rc:
            lines.append(f"{sub}same video, first {short.video_s:.1f} s vs whole: a run failed -> FAIL")
        else:
            grow = full.run.peak_mb - short.run.peak_mb
            pct = grow / short.run.peak_mb
            verdict = "PASS" if pct <= FLAT_TOLERANCE else "FAIL"
            lines.append(f"{sub}same video ({full.name}), first {short.video_s:.1f} s: {short.run.peak_mb:.0f} MB, "
                         f"whole {full.video_s:.1f} s: {full.run.peak_mb:.0f} MB -> {grow:+.0f} MB ({pct:+.0%}; "
                         f"flat means <= {FLAT_TOLERANCE:.0%}) -> {verdict}")
    else:
        lines.append(f"{sub}(no video longer than {2 * PREFIX_S:g} s for the same-video check, or --no-flat-check)")
    return "\n".join(lines)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--videos", nargs="+", default=[str(SHARED / "media" / "videos")],
                   help="video files or folders (searched recursively); default: %(default)s")
    p.add_argument("--out", help="keep each run's output under this folder (default: a temporary folder, removed)")
    p.add_argument("--config", help="vidpipe config file, passed as --config FILE")
    p.add_argument("--cmd", default=DEFAULT_CMD,
                   help="command template with {video} and {out}; default: %(default)s")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--no-flat-check", action="store_true",
                   help=f"skip re-running the longest video cut to its first {PREFIX_S:g} s")
    head, tail = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args, unknown = p.parse_known_args(head)
    return args, unknown + tail + (["--config", args.config] if args.config else [])


def main(argv: list[str]) -> int:
    args, extra = parse(argv)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise BenchError(f"`{tool}` not found on PATH (Debian: apt-get install ffmpeg)")
    videos = find_videos(args.videos)
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="vidpipe-bench-")
    base = Path(args.out or tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    try:
        root = Path(args.videos[0]) if len(args.videos) == 1 and Path(args.videos[0]).is_dir() else None
        rows = []
        for v in videos:
            name = str(v.relative_to(root)) if root else v.name
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_one(v, name, args.cmd, extra, base))
            if rows[-1].run.rc:
                print(f"  {name}: rc={rows[-1].run.rc}: {rows[-1].run.err}", file=sys.stderr)
        flat = None
        longest = max(rows, key=lambda r: r.video_s)
        if not args.no_flat_check and longest.video_s > 2 * PREFIX_S and longest.run.rc == 0:
            src = videos[rows.index(longest)]
            print(f"running {longest.name} (first {PREFIX_S:g} s) ...", file=sys.stderr, flush=True)
            short = bench_one(prefix_copy(src, PREFIX_S, base), f"{longest.name} [first {PREFIX_S:g} s]",
                              args.cmd, extra, base)
            flat = (short, longest)
        print("running all videos in one process ...", file=sys.stderr, flush=True)
        whole = bench_whole(videos, args.cmd, extra, base)
    finally:
        if tmp:
            tmp.cleanup()
    cmd_shown = shlex.join(shlex.split(args.cmd) + extra).replace(sys.executable, "python")
    print(("`" + cmd_shown + "`" if args.markdown else "command: " + cmd_shown) + "\n")
    print(table(rows, args.markdown))
    if text := breakdown(rows, args.markdown):
        print(text)
    print(targets(rows, flat, whole, args.markdown))
    return 1 if any(r.run.rc for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
