"""The major-character rule, exact and cheap: the same verdicts, for how much less work?

    python benchmarks/bench_rule.py [--videos DIR_OR_FILE ...] [--markdown] [--set KEY=VALUE ...]

Runs only the rule (`pipeline.stages = major_character`) on each video twice in this
process: exactly, on every sampled frame (`major_character.coarse_step = 1`), and as
configured (by default coarse frames first, see vidpipe/stages/major_character.py). Prints
one row per clip that reached the rule (status, reason, valid-frame ratio, each way) and a
total: clips whose verdict differs, network calls and model seconds of each way. Exit
status 1 when any verdict differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDPIPE_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

import vidpipe  # noqa: E402
from vidpipe.config import Config  # noqa: E402

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


def videos(inputs: list[str]) -> list[Path]:
    found = []
    for item in map(Path, inputs):
        found += sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTS) if item.is_dir() else [item]
    return found


def run(paths: list[Path], out: Path, settings: list[str], exact: bool):
    cfg = Config()
    if (SHARED / "weights").is_dir():
        cfg.run.weights_dir = str(SHARED / "weights")
    cfg.set("pipeline.stages", "major_character")
    for item in settings:
        key, value = item.split("=", 1)
        cfg.set(key, value)
    if exact:
        cfg.set("major_character.coarse_step", 1)
    report = vidpipe.run(paths, out, cfg)
    clips = vidpipe.read_table(out, "clips")
    clips = clips[clips.valid_frame_ratio.notna()].set_index("clip_id").sort_index()
    names = {v.video_id: Path(v.path).name for v in vidpipe.read_table(out, "videos").itertuples()}
    clips["video"] = clips.video_id.map(names)
    calls = sum(sum(o.model_calls.values()) for o in report.outcomes)
    return clips, calls, sum(o.model_seconds for o in report.outcomes)


def verdict(clip) -> str:
    return clip.reason if clip.status == "rejected" else clip.status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", nargs="+", default=[str(SHARED / "media" / "videos")])
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    paths = videos(args.videos)
    with tempfile.TemporaryDirectory() as tmp:
        exact, exact_calls, exact_s = run(paths, Path(tmp) / "exact", args.settings, exact=True)
        cheap, cheap_calls, cheap_s = run(paths, Path(tmp) / "cheap", args.settings, exact=False)
    rows, differ = [], 0
    for clip_id in exact.index:
        a, b = exact.loc[clip_id], cheap.loc[clip_id]
        same = verdict(a) == verdict(b)
        differ += not same
        rows.append([f"{a.video} #{a.shot_index}", f"{a.duration_s:.1f}", verdict(a), f"{a.valid_frame_ratio:.2f}",
                     verdict(b), f"{b.valid_frame_ratio:.2f}", "yes" if same else "**NO**"])
    head = ["clip", "s", "exact verdict", "exact ratio", "cheap verdict", "cheap ratio", "same"]
    total = ["**total**", f"{len(rows)} clips", f"{exact_calls} calls", f"{exact_s:.2f} model s",
             f"{cheap_calls} calls", f"{cheap_s:.2f} model s", f"{differ} differ"]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows + [total]:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [head, *rows, total]) for i in range(len(head))]
        for r in [head, *rows, total]:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
