"""Audio stages: extraction designs, and what speech + asd + audio cost next to the visual stages.

    python benchmarks/bench_audio.py [--videos FILE ...] [--weights DIR] [--repeat 3]

1. Extraction, in this process (median of `--repeat`): the run's video decode alone (4 fps
   analysis frames, as `vidpipe run` decodes), the same decode followed by the separate
   sequential AudioReader over the video in 4 s clips (what the speech stage does), and a
   same-pass loop that demuxes video and audio packets together and resamples the audio as
   it goes (what the runner's decode loop would need to hand each clip its audio).
2. Stages, each run in its own `vidpipe run` child process (fresh store, default config
   but clips up to 90 s, so that the 63 s and 80 s single-shot videos are clips at all;
   2 threads): the visual stages alone (major_character, faces, heads, bodies), then the
   same with speech, asd and audio. From the store's `videos.timings`: seconds per stage;
   audio = speech + audio stages (extraction + VAD + embedding) as a share of the visual
   stages (target <= 10%), asd seconds per second of kept clip (target <= 0.35), and each
   child's peak resident memory and CPU seconds (from os.wait4).

Timings on shared cores are noisy: the CPU seconds column says how much was work; compare
ratios, and run again when the machine is quiet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("VIDPIPE_SHARED", REPO.parent / "shared"))

import vidpipe  # noqa: E402
from vidpipe.audio import SAMPLE_RATE, AudioReader  # noqa: E402
from vidpipe.util import fit_within  # noqa: E402
from vidpipe.video import decode, probe  # noqa: E402

VISUAL = ["major_character", "faces", "heads", "bodies"]
AUDIO = ["speech", "asd", "audio"]
CLIP_S = 4.0


def video_only(info) -> int:
    return sum(1 for _ in decode(info, sample_fps=4.0, max_side=640))


def separate_reader(info) -> int:
    n = video_only(info)
    with AudioReader(info.path, info.start_time_s) as reader:
        t = info.video_start_s
        while t < info.video_end_s:
            n += len(reader.read(t, min(t + CLIP_S, info.video_end_s))) > 0
            t += CLIP_S
    return n


def same_pass(info) -> int:
    """One demux of both streams: video frames get decode()'s work, audio frames are
    resampled to 16 kHz mono and kept until their clip is complete (one clip's worth)."""
    n = 0
    with av.open(str(info.path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        video.thread_type = "AUTO"
        small_size = fit_within(info.width, info.height, 256)[:2]
        analysis_size = fit_within(info.width, info.height, 640, even=True)[:2]
        to_small, to_analysis = VideoReformatter(), VideoReformatter()
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        held: list[np.ndarray] = []
        next_sample, clip_end = -1.0, info.video_start_s + CLIP_S
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if packet.stream.type == "audio":
                    held.extend(f.to_ndarray() for f in resampler.resample(frame))
                    continue
                t = float(frame.pts * frame.time_base) - info.start_time_s
                to_small.reformat(frame, width=small_size[0], height=small_size[1], format="bgr24",
                                  interpolation="FAST_BILINEAR").to_ndarray()
                if t >= next_sample:
                    to_analysis.reformat(frame, width=analysis_size[0], height=analysis_size[1], format="bgr24").to_ndarray()
                    next_sample = t + 0.25
                if t >= clip_end:  # a clip is complete: hand its audio on
                    n += len(held) > 0
                    held, clip_end = [], clip_end + CLIP_S
                n += 1
    return n


def timed(fn, repeat: int) -> float:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def run_child(video: Path, stages: list[str], weights: Path, out: Path) -> dict:
    """`vidpipe run` on one video in a child process: store timings, peak MB, CPU s, kept s."""
    cmd = [sys.executable, "-m", "vidpipe", "run", str(video), "-o", str(out), "--weights", str(weights), "-q",
           "--executor", "serial", "--set", "run.threads=2", "--max-clip", "90",
           "--set", f"pipeline.stages={','.join(stages)}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vidpipe run failed on {video.name}: {err.strip()[-500:]}")
    row = vidpipe.read_table(out, "videos").iloc[0]
    clips = vidpipe.read_table(out, "clips")
    kept = clips[clips.status == "ok"]
    timings = dict(row.timings)  # stage -> wall seconds
    speech_s = float((kept.duration_s * kept.speech_ratio.fillna(0)).sum()) if "speech_ratio" in kept else 0.0
    return {"wall": wall, "peak_mb": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime,
            "t": timings, "kept_s": float(kept.duration_s.sum()), "n_kept": len(kept), "speech_s": speech_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", nargs="*", type=Path, default=[SHARED / "media/videos" / n for n in (
        "short_hamilton_clip.mp4", "mgt_dancer.avi", "vtest_opencv_reencoded.avi")])
    p.add_argument("--weights", type=Path, default=SHARED / "weights")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    print("## Extraction: separate sequential reader vs same-pass demux (median of %d)\n" % args.repeat)
    print("| video | video s | video decode s | + separate reader s | same pass s | reader adds | same pass adds |")
    print("|---|---|---|---|---|---|---|")
    for path in args.videos:
        info = probe(path)
        if not info.has_audio:
            continue
        base = timed(lambda: video_only(info), args.repeat)
        sep = timed(lambda: separate_reader(info), args.repeat)
        one = timed(lambda: same_pass(info), args.repeat)
        print(f"| {path.name} | {info.duration_s:.1f} | {base:.2f} | {sep:.2f} | {one:.2f} | "
              f"{(sep - base) / base:+.0%} | {(one - base) / base:+.0%} |")

    print("\n## Stages: `vidpipe run` per video, visual stages alone and with speech + asd + audio\n")
    print("| video | video s | kept clips (s) | speech in them s | visual stages s | speech s | audio s | audio / visual | "
          "asd s | asd s per kept s | asd s per speech s | wall s visual / +audio | peak MB visual / +audio | "
          "cpu s visual / +audio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp(prefix="bench_audio_"))
    totals = {"visual": 0.0, "audio": 0.0, "asd": 0.0, "kept": 0.0, "speech": 0.0}
    try:
        for i, path in enumerate(args.videos):
            info = probe(path)
            vis = run_child(path, VISUAL, args.weights, tmp / f"v{i}")
            full = run_child(path, VISUAL + AUDIO, args.weights, tmp / f"a{i}")
            visual_s = sum(full["t"].get(s, 0.0) for s in VISUAL)
            audio_s = full["t"].get("speech", 0.0) + full["t"].get("audio", 0.0)
            asd_s = full["t"].get("asd", 0.0)
            totals["visual"] += visual_s
            totals["audio"] += audio_s
            totals["asd"] += asd_s
            totals["kept"] += full["kept_s"]
            totals["speech"] += full["speech_s"]
            per_kept = asd_s / full["kept_s"] if full["kept_s"] else float("nan")
            per_speech = asd_s / full["speech_s"] if full["speech_s"] else float("nan")
            print(f"| {path.name} | {info.duration_s:.1f} | {full['n_kept']} ({full['kept_s']:.1f}) | "
                  f"{full['speech_s']:.1f} | {visual_s:.2f} | "
                  f"{full['t'].get('speech', 0.0):.2f} | {full['t'].get('audio', 0.0):.2f} | "
                  f"{audio_s / visual_s if visual_s else float('nan'):.1%} | {asd_s:.2f} | {per_kept:.2f} | {per_speech:.2f} | "
                  f"{vis['wall']:.1f} / {full['wall']:.1f} | {vis['peak_mb']:.0f} / {full['peak_mb']:.0f} | "
                  f"{vis['cpu']:.1f} / {full['cpu']:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    share = totals["audio"] / totals["visual"] if totals["visual"] else float("nan")
    per_kept = totals["asd"] / totals["kept"] if totals["kept"] else float("nan")
    per_speech = totals["asd"] / totals["speech"] if totals["speech"] else float("nan")
    print(f"\nAudio (extraction + VAD + embedding) adds {share:.1%} to the visual stages: "
          f"{'PASS' if share <= 0.10 else 'FAIL'} (target <= 10%)")
    print(f"Active speaker: {per_kept:.2f} s per second of kept clip: "
          f"{'PASS' if per_kept <= 0.35 else 'FAIL'} (target <= 0.35); {per_speech:.2f} s per second of "
          "speech in them (the frames it scores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
