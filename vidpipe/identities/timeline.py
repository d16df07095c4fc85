"""Timelines: per video, each person and the time ranges they are seen in.

What Azure Video Indexer ("faces … appearances") and AWS Rekognition (person tracking)
return: a person's appearances merged across adjacent clips, on the file's presentation
timeline, so `ffmpeg -ss START` or a player's clock lands on them. Built from the resolved
identities of every route (OUT/identities/); library-mode rows carry their face track's
own range, clip-level rows the clip's. Ranges closer than `merge_gap_s` are joined (a
cut-away shorter than a kept clip does not split an appearance).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from vidpipe.identities.encoder import IdentitiesError
from vidpipe.identities.table import read_identities, resolve
from vidpipe.util import atomic_write_text

MERGE_GAP_S = 0.5
CSV_COLUMNS = ["video_id", "path", "identity", "start_s", "end_s", "duration_s", "score", "sources", "clip_ids"]


@dataclass
class Appearance:
    start_s: float
    end_s: float
    score: float  # best score among its rows
    sources: list[str]
    clip_ids: list[str]


@dataclass
class PersonTimeline:
    identity: str
    total_s: float
    appearances: list[Appearance] = field(default_factory=list)


@dataclass
class VideoTimeline:
    video_id: str
    path: str
    duration_s: float | None
    people: list[PersonTimeline] = field(default_factory=list)


def _appearances(rows: pd.DataFrame, gap: float) -> dict[tuple[str, str], list[Appearance]]:
    """(video, person) -> their ranges merged, in one pass over the rows sorted by time."""
    rows = rows.sort_values(["video_id", "identity", "start_s", "end_s"])
    out: dict[tuple[str, str], list[Appearance]] = {}
    columns = ("video_id", "identity", "start_s", "end_s", "score", "source", "clip_id")
    for video, identity, start, end, score, source, clip in zip(*(rows[c].tolist() for c in columns)):
        mine = out.setdefault((video, identity), [])
        if mine and start <= mine[-1].end_s + gap:
            a = mine[-1]
            a.end_s, a.score = max(a.end_s, end), max(a.score, score)
            if source not in a.sources:
                a.sources = sorted([*a.sources, source])
            if clip not in a.clip_ids:
                a.clip_ids.append(clip)
        else:
            mine.append(Appearance(float(start), float(end), float(score), [source], [clip]))
    return out


def timeline(out: str | Path, video: str | None = None, merge_gap_s: float = MERGE_GAP_S) -> list[VideoTimeline]:
    """Timelines of every video of the store (or of one: its id, path or file name)."""
    from vidpipe.store import read_table

    out = Path(out)
    videos = read_table(out, "videos", ["video_id", "path", "duration_s", "status"])
    videos = videos[videos.status == "ok"]
    if video is not None:
        videos = videos[(videos.video_id == video) | (videos.path == str(Path(video).absolute()))
                        | (videos.path.map(lambda p: Path(p).name) == video)]
        if videos.empty:
            raise IdentitiesError(f"no video {video!r} in {out}")
    clips = read_table(out, "clips", ["clip_id", "video_id", "start_s", "end_s"])
    rows = resolve(read_identities(out)).merge(clips, on="clip_id", suffixes=("", "_clip"))
    rows["start_s"] = rows.start_s.fillna(rows.start_s_clip)
    rows["end_s"] = rows.end_s.fillna(rows.end_s_clip)
    rows["score"] = rows.score.fillna(0.0)
    people: dict[str, list[PersonTimeline]] = {}
    for (vid, identity), appearances in _appearances(rows, merge_gap_s).items():
        total = round(sum(a.end_s - a.start_s for a in appearances), 3)
        people.setdefault(vid, []).append(PersonTimeline(str(identity), total, appearances))
    result = []
    for vid, path, duration in zip(*(videos.sort_values("path")[c].tolist() for c in ("video_id", "path", "duration_s"))):
        mine = sorted(people.get(vid, []), key=lambda p: (-p.total_s, p.identity))
        result.append(VideoTimeline(vid, path, None if pd.isna(duration) else float(duration), mine))
    return result


def to_json(timelines: list[VideoTimeline]) -> str:
    return json.dumps({"videos": [asdict(t) for t in timelines]}, indent=2) + "\n"


def to_csv(timelines: list[VideoTimeline]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for t in timelines:
        for p in t.people:
            for a in p.appearances:
                writer.writerow([t.video_id, t.path, p.identity, f"{a.start_s:.3f}", f"{a.end_s:.3f}",
                                 f"{a.end_s - a.start_s:.3f}", f"{a.score:.4f}", "+".join(a.sources), " ".join(a.clip_ids)])
    return buf.getvalue()


def write_timeline(out: str | Path, timelines: list[VideoTimeline]) -> tuple[Path, Path]:
    """OUT/timeline.json and OUT/timeline.csv (each written atomically)."""
    out = Path(out)
    atomic_write_text(out / "timeline.json", to_json(timelines))
    atomic_write_text(out / "timeline.csv", to_csv(timelines))
    return out / "timeline.json", out / "timeline.csv"


def format_timeline(timelines: list[VideoTimeline]) -> str:
    """A readable listing: one block per video, one line per person."""
    lines = []
    for t in timelines:
        lines.append(f"{Path(t.path).name}  ({t.video_id})")
        if not t.people:
            lines.append("  nobody recognised")
        for p in t.people:
            ranges = ", ".join(f"{_clock(a.start_s)}-{_clock(a.end_s)}" for a in p.appearances)
            lines.append(f"  {p.identity:<24} {p.total_s:7.1f} s  {ranges}")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"
