"""What a review works on: the store's kept clips, the identity each route proposes for
them, the order they are reviewed in, and the reference clips of each identity.

A clip's proposal is its most trusted automatic identity (`resolve`: gallery > model >
propagated; review rows are the reviewers' own and never propose). The queue puts the least
confident proposals first (iQIYI-VID §3.4 cleans what automation is unsure of), named
proposals before clips nobody was recognised in. References of an identity are its highest
face-score clips (gallery rows first), never a clip a reviewer said is someone else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidpipe.identities.encoder import IdentitiesError
from vidpipe.identities.match import UNKNOWN
from vidpipe.identities.table import read_identities, resolve
from vidpipe.review.db import Decision, disagreements, final_labels
from vidpipe.store import read_table

CLIP_ID = re.compile(r"^[0-9a-f]{16}-[0-9]{4,}$")
N_REFERENCES = 3
N_CROPS = 4


@dataclass(frozen=True)
class Clip:
    clip_id: str
    video_id: str
    start_s: float
    end_s: float
    proposed: str  # a name, or 'unknown'
    score: float | None  # of the proposal
    source: str | None  # the route that proposed it; None: the store was never tagged

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Video:
    video_id: str
    path: Path
    size_bytes: int
    codec: str | None
    name: str


@dataclass(frozen=True)
class Face:
    time_s: float
    bbox: tuple[float, float, float, float]
    quality: float


class StoreView:
    """One store's clips, videos, proposals and best faces, read once (a review or an
    export sees the store as it was when it started)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if not (self.out / "clips").is_dir() or not (self.out / "videos").is_dir():
            raise IdentitiesError(f"{self.out} is not a vidpipe feature store (no clips/ or videos/): run `vidpipe run` first")
        videos = read_table(self.out, "videos", ["video_id", "path", "size_bytes", "codec", "status"])
        videos = videos[videos.status == "ok"]
        self.videos = {v: Video(v, Path(p), int(s), c, Path(p).name)
                       for v, p, s, c in zip(videos.video_id, videos.path, videos.size_bytes, videos.codec)}
        clips = read_table(self.out, "clips", ["clip_id", "video_id", "start_s", "end_s", "status"])
        clips = clips[(clips.status == "ok") & clips.video_id.isin(list(self.videos))]
        proposals = self._proposals(set(clips.clip_id))
        self.clips: dict[str, Clip] = {}
        for c, v, s, e in zip(clips.clip_id, clips.video_id, clips.start_s, clips.end_s):
            identity, score, source = proposals.get(c, (UNKNOWN, None, None))
            self.clips[c] = Clip(c, v, float(s), float(e), identity, score, source)
        named = sorted((c for c in self.clips.values() if c.proposed != UNKNOWN), key=_confidence)
        unnamed = sorted((c for c in self.clips.values() if c.proposed == UNKNOWN), key=_confidence)
        self.order = [c.clip_id for c in named + unnamed]  # the queue: least confident first
        self._faces: dict[str, list[Face]] | None = None

    def _proposals(self, kept: set[str]) -> dict[str, tuple[str, float | None, str]]:
        rows = read_identities(self.out)
        rows = rows[(rows.source != "review") & rows.clip_id.isin(kept)]
        out: dict[str, tuple[str, float | None, str]] = {}
        for c, s, src in zip(rows.clip_id, rows.score, rows.source):  # nobody recognised: 'unknown', best score
            if c not in out or (s is not None and not np.isnan(s) and s > (out[c][1] or -np.inf)):
                out[c] = (UNKNOWN, None if s is None or np.isnan(s) else float(s), src)
        named = resolve(rows).sort_values("score", ascending=False).drop_duplicates("clip_id")
        out.update({c: (i, float(s), src) for c, i, s, src in zip(named.clip_id, named.identity, named.score, named.source)})
        return out

    # ---------------------------------------------------------------- lookups

    def clip(self, clip_id: str) -> Clip | None:
        """The clip, only when it is a kept clip of this store (ids are checked, never paths)."""
        return self.clips.get(clip_id) if CLIP_ID.match(clip_id or "") else None

    def identities(self) -> list[str]:
        return sorted({c.proposed for c in self.clips.values()} - {UNKNOWN})

    def video_choices(self) -> list[tuple[str, str]]:
        used = {c.video_id for c in self.clips.values()}
        return sorted(((v.video_id, v.name) for v in self.videos.values() if v.video_id in used), key=lambda x: x[1])

    def queue(self, pass_: int, decisions: list[Decision], reviewer: str, video: str | None = None,
              identity: str | None = None) -> list[str]:
        """The clips still to review in `pass_`, in review order: pass 1 every clip not yet
        decided; pass 2 (blind) clips another reviewer decided in pass 1; pass 3 the clips
        whose first two reviews disagree."""
        done = {d.clip_id for d in decisions if d.pass_ == pass_}
        if pass_ == 1:
            todo = None
        elif pass_ == 2:
            todo = {d.clip_id for d in decisions if d.pass_ == 1 and d.reviewer != reviewer}
        else:
            todo = set(disagreements(decisions))
        return [c for c in self.order if c not in done and (todo is None or c in todo)
                and (not video or self.clips[c].video_id == video)
                and (not identity or self.clips[c].proposed == identity)]

    def references(self, identity: str, exclude: str, decisions: list[Decision]) -> list[Clip]:
        """The identity's highest face-score clips (gallery proposals first), never one a
        reviewer labelled as someone else, nor `exclude` itself."""
        if identity == UNKNOWN:
            return []
        final = final_labels(decisions)
        mine = [c for c in self.clips.values() if c.proposed == identity and c.clip_id != exclude
                and (c.clip_id not in final or final[c.clip_id].label == identity)]
        mine.sort(key=lambda c: (c.source != "gallery", -(c.score or 0.0), c.clip_id))
        return mine[:N_REFERENCES]

    def faces(self, clip_id: str, n: int = N_CROPS) -> list[Face]:
        """The clip's best faces: the major character's by rank, else by quality."""
        if self._faces is None:
            self._faces = self._read_faces()
        return self._faces.get(clip_id, [])[:n]

    def _read_faces(self) -> dict[str, list[Face]]:
        if not (self.out / "faces").is_dir():
            return {}
        faces = read_table(self.out, "faces", ["clip_id", "time_s", "bbox", "quality", "rank"])
        faces["_ranked"] = faces["rank"].notna()
        faces = faces.sort_values(["clip_id", "_ranked", "rank", "quality"], ascending=[True, False, True, False])
        faces = faces.groupby("clip_id", sort=False).head(N_CROPS)
        out: dict[str, list[Face]] = {}
        for c, t, b, q in zip(faces.clip_id, faces.time_s, faces.bbox, faces.quality):
            out.setdefault(c, []).append(Face(float(t), tuple(float(x) for x in b), float(q)))
        return out


def _confidence(clip: Clip) -> tuple[float, str]:
    return (clip.score if clip.score is not None else -np.inf, clip.clip_id)
