"""What a review works on: the store's kept clips, the identity each route proposes for
them, the order they are reviewed in, and the reference clips of each identity.

A clip's proposal is its most trusted automatic identity (`resolve`: gallery > model >
propagated; review rows are the reviewers' own and never propose). In a library store
(several people per clip, each row with its face track) every person of a clip is a review
item of its own, `(clip, person)`, so a decision on one never touches another; elsewhere
an item is the whole clip, `(clip, '')`. The queue puts the least confident proposals
first (iQIYI-VID §3.4 cleans what automation is unsure of), named proposals before clips
nobody was recognised in. References of an identity are its highest
face-score clips (gallery rows first), never a clip a reviewer said is someone else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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
class Person:
    """One person proposed in a library store's clip: a review item of their own."""

    identity: str
    score: float | None
    source: str
    track: int
    start_s: float | None
    end_s: float | None


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
        rows = read_identities(self.out)
        rows = rows[(rows.source != "review") & rows.clip_id.isin(set(clips.clip_id))]
        proposals = self._proposals(rows)
        self.people = self._people(rows)  # library stores: clip -> its people, most confident first
        self.clips: dict[str, Clip] = {}
        for c, v, s, e in zip(clips.clip_id, clips.video_id, clips.start_s, clips.end_s):
            identity, score, source = proposals.get(c, (UNKNOWN, None, None))
            self.clips[c] = Clip(c, v, float(s), float(e), identity, score, source)
        items = [((c.clip_id, p.identity), p.identity, p.score) for c in self.clips.values()
                 for p in self.people.get(c.clip_id, [])]
        items += [((c.clip_id, ""), c.proposed, c.score) for c in self.clips.values() if c.clip_id not in self.people]
        rank = {i[0]: (i[1] == UNKNOWN, -np.inf if i[2] is None else i[2], i[0]) for i in items}
        first = {}  # a clip's people come one after another, from its least confident one
        for key in sorted(rank.values()):
            first.setdefault(key[2][0], key)
        self.order = sorted(rank, key=lambda i: (first[i[0]], rank[i]))  # the queue of (clip, subject)
        self._faces: dict[str, list[Face]] | None = None

    @staticmethod
    def _people(rows) -> dict[str, list[Person]]:
        """Every named person of each clip whose rows carry face tracks (library mode)."""
        named = resolve(rows)
        named = named[named.track.notna()].sort_values(["clip_id", "score"], ascending=[True, False])
        out: dict[str, list[Person]] = {}
        for r in named.itertuples():
            out.setdefault(r.clip_id, []).append(Person(r.identity, _float(r.score), r.source, int(r.track),
                                                        _float(r.start_s), _float(r.end_s)))
        return out

    def subject(self, clip_id: str, subject: str) -> tuple[str, float | None, Person | None]:
        """(proposed name, its score, the person) of one review item; a clip-level item
        (subject '') proposes the clip's identity. Unknown subjects are refused."""
        clip = self.clips[clip_id]
        if not subject:
            if clip_id in self.people:
                raise IdentitiesError(f"clip {clip_id} has several people: decide on each of them")
            return clip.proposed, clip.score, None
        person = next((p for p in self.people.get(clip_id, []) if p.identity == subject), None)
        if person is None:
            raise IdentitiesError(f"{subject!r} is not proposed in clip {clip_id}")
        return person.identity, person.score, person

    @staticmethod
    def _proposals(rows) -> dict[str, tuple[str, float | None, str]]:
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
        people = {p.identity for ps in self.people.values() for p in ps}
        return sorted(({c.proposed for c in self.clips.values()} | people) - {UNKNOWN})

    def video_choices(self) -> list[tuple[str, str]]:
        used = {c.video_id for c in self.clips.values()}
        return sorted(((v.video_id, v.name) for v in self.videos.values() if v.video_id in used), key=lambda x: x[1])

    def queue(self, pass_: int, decisions: list[Decision], reviewer: str, video: str | None = None,
              identity: str | None = None) -> list[tuple[str, str]]:
        """The items (clip, subject) still to review in `pass_`, in review order: pass 1
        every item not yet decided; pass 2 (blind) items another reviewer decided in pass 1;
        pass 3 the items whose first two reviews disagree."""
        done = {d.item for d in decisions if d.pass_ == pass_}
        if pass_ == 1:
            todo = None
        elif pass_ == 2:
            todo = {d.item for d in decisions if d.pass_ == 1 and d.reviewer != reviewer}
        else:
            todo = set(disagreements(decisions))
        return [i for i in self.order if i not in done and (todo is None or i in todo)
                and (not video or self.clips[i[0]].video_id == video)
                and (not identity or (i[1] or self.clips[i[0]].proposed) == identity)]

    def references(self, identity: str, exclude: str, decisions: list[Decision]) -> list[Clip]:
        """The identity's highest face-score clips (gallery proposals first), never one a
        reviewer labelled as someone else, nor `exclude` itself."""
        if identity == UNKNOWN:
            return []
        final = final_labels(decisions)
        mine = [c for c in self.clips.values() if c.proposed == identity and c.clip_id != exclude
                and ((c.clip_id, "") not in final or final[c.clip_id, ""].label == identity)]
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


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)

