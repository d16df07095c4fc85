"""Tagging: who is in each kept clip of a feature store.

1. **Tracks** (`OUT/tracks/<video_id>.parquet`, see `tracks.py`): the major character's
   face track per clip (dataset mode), or every person's (library mode,
   `clips.require_major_character = false` in the store's config).
2. **Faces against the gallery** (`match.py`): a track is a person when its template's
   cosine to the person's template clears the threshold and beats the runner-up by the
   margin (calibrated defaults, `calibration.py`), else `unknown`.
3. **Propagation** (dataset mode, when the store has a `bodies` or `audio` table): clips
   without a recognised face inherit the majority identity of their clothes cluster, else
   of their voice cluster, inside their video (`propagate.py`).
4. **Unknown people**: unrecognised tracks are clustered across the library (`cluster.py`).
5. **Output**: `OUT/identities/tags.parquet` (IDENTITY_SCHEMA), `OUT/unknown/`,
   `OUT/timeline.json` and `.csv`.

Incremental. Tracks are rebuilt only for videos that are new or were re-run (their
`config_hash` changed). A track is matched again only when it is new, or when a changed
gallery person (faces added or removed, person removed) was its best or runner-up match,
or now scores at least its runner-up score: no other track can change its decision, since
the decision depends only on the best and runner-up scores. Renames change names, not
scores. Propagation is redone only in videos whose face labels changed, clustering only
when the set of unknown tracks changed. What was matched against what is kept in
`OUT/identities/.tag_state.json` and `.matches.parquet`, written last, so a killed run
repeats its work and never leaves a half-written file; unknown-people ids continue after
every id the clusters table and the gallery hold, whatever the state says. One `tag` per
store at a time (`locks.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vidpipe.identities.calibration import DEFAULTS, QUALITY_FLOORS, default_thresholds
from vidpipe.identities.cluster import (
    ClusterOptions, cluster_faces, crop_path, read_clusters, stable_ids, write_clusters, write_crop,
)
from vidpipe.identities.encoder import IdentitiesError, require_same, store_fingerprint
from vidpipe.identities.gallery import Gallery, Templates
from vidpipe.identities.locks import store_lock
from vidpipe.identities.match import UNKNOWN, Thresholds, top2
from vidpipe.identities.propagate import PropagationOptions, propagate_video
from vidpipe.identities.table import IDENTITY_SCHEMA, identities_dir, read_identities, write_identities
from vidpipe.identities.timeline import MERGE_GAP_S, timeline, write_timeline
from vidpipe.identities.tracks import TRACKS_SCHEMA, list_matrix, video_tracks
from vidpipe.util import atomic_path, atomic_write_text

TRACKS_TABLE = "tracks"
STATE_FILE = ".tag_state.json"
MATCHES_FILE = ".matches.parquet"
STATE_VERSION = 1
MATCHES_SCHEMA = pa.schema([
    ("key", pa.string()),  # '<clip_id>#<track>'
    ("best", pa.int64()),  # person_id, -1: none
    ("best_score", pa.float32()),
    ("second", pa.int64()),
    ("second_score", pa.float32()),
])


@dataclass
class TagOptions:
    threshold: float | None = None  # None: the gallery's saved calibration, else the embedder's default
    margin: float | None = None
    link: float | None = None  # face tracking's minimum cosine; None: the embedder's calibrated threshold
    propagation: PropagationOptions = field(default_factory=PropagationOptions)
    clustering: ClusterOptions = field(default_factory=ClusterOptions)
    merge_gap_s: float = MERGE_GAP_S  # timeline


@dataclass
class TagReport:
    out: Path
    mode: str  # 'dataset' (one identity per clip) | 'library' (every person)
    thresholds: Thresholds
    clips: int = 0  # kept clips in the store
    videos_tracked: int = 0  # videos whose face tracks were built now
    tracks: int = 0
    rescored: int = 0  # tracks matched against the gallery now
    changed: int = 0  # clips whose identity rows differ from the last tagging
    named: int = 0  # clips with a person recognised by face
    propagated: int = 0  # clips that inherited an identity from their clothes or voice cluster
    unknown: int = 0  # clips with nobody recognised
    clusters: int = 0  # unknown people
    notes: list[str] = field(default_factory=list)


@dataclass
class _State:
    settings: dict = field(default_factory=dict)
    videos: dict[str, str] = field(default_factory=dict)  # video_id -> config_hash its tracks come from
    gallery_id: str = ""
    people: dict[str, int] = field(default_factory=dict)  # person_id -> revision the matches used
    propagation: dict[str, str] = field(default_factory=dict)  # video_id -> digest of the face labels used
    unknown_key: str = ""  # digest of the unknown tracks last clustered
    next_cluster_id: int = 1

    @classmethod
    def load(cls, out: Path, named_clusters: Iterable[int] = ()) -> "_State":
        """The saved state, with `next_cluster_id` above every id in use: in the clusters
        table and among `named_clusters` (ids the gallery enrolled). The state is written
        last, so a kill after the clusters table (or a lost state file) left it behind them."""
        state = cls()
        try:
            data = json.loads((identities_dir(out) / STATE_FILE).read_text())
            if data.pop("version", None) == STATE_VERSION:
                state = cls(**data)
        except (OSError, ValueError, TypeError):
            pass
        taken = [*read_clusters(out).cluster_id.tolist(), *named_clusters]
        state.next_cluster_id = max([state.next_cluster_id, *(int(i) + 1 for i in taken)])
        return state

    def save(self, out: Path) -> None:
        atomic_write_text(identities_dir(out) / STATE_FILE, json.dumps({"version": STATE_VERSION, **asdict(self)}))


def _digest(items) -> str:
    return hashlib.sha1("\n".join(map(str, items)).encode()).hexdigest()


def _store_settings(out: Path, link: float, min_quality: float | None) -> dict:
    config = json.loads((out / "manifest.json").read_text()).get("config", {})
    try:
        return {"library": not config["clips"]["require_major_character"], "top_k": int(config["faces"]["top_k"]),
                "period_s": 1.0 / float(config["sampling"]["fps"]), "link": round(float(link), 6),
                "min_quality": min_quality}
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise IdentitiesError(f"{out}/manifest.json lacks the clips, faces or sampling settings") from None


class _Tagger:
    """One tagging pass over a store (see the module docstring for the steps)."""

    def __init__(self, out: Path, templates: Templates, gallery_id: str, thresholds: Thresholds,
                 settings: dict, options: TagOptions, named_clusters: Iterable[int] = ()) -> None:
        from vidpipe.store import read_table

        self.out, self.templates, self.gallery_id = out, templates, gallery_id
        self.thresholds, self.settings, self.options = thresholds, settings, options
        self.min_quality = settings["min_quality"]  # the embedder's quality floor (calibration.QUALITY_FLOORS)
        self.library = settings["library"]
        self.state = _State.load(out, named_clusters)
        self.fresh = self.state.settings != settings  # a different analysis: redo everything
        videos = read_table(out, "videos", ["video_id", "path", "status", "config_hash"])
        self.videos = videos[videos.status == "ok"].set_index("video_id")
        clips = read_table(out, "clips", ["clip_id", "video_id", "start_s", "end_s", "status"])
        self.clips = clips[(clips.status == "ok") & clips.video_id.isin(self.videos.index)].set_index("clip_id")
        self.report = TagReport(out, "library" if self.library else "dataset", thresholds, clips=len(self.clips))

    # ---------------------------------------------------------------- 1. tracks

    def update_tracks(self) -> pd.DataFrame:
        tracks_dir = self.out / TRACKS_TABLE
        hashes = self.videos.config_hash.to_dict()
        for vid, config_hash in hashes.items():
            if not self.fresh and self.state.videos.get(vid) == config_hash and (tracks_dir / f"{vid}.parquet").exists():
                continue
            mine = self.clips[self.clips.video_id == vid]
            spans = dict(zip(mine.index, zip(mine.start_s, mine.end_s)))
            table = video_tracks(self.out / "faces" / f"{vid}.parquet", spans, vid, self.library,
                                 self.settings["link"], self.settings["top_k"], self.settings["period_s"],
                                 self.min_quality)
            with atomic_path(tracks_dir / f"{vid}.parquet") as tmp:
                pq.write_table(table, tmp)
            self.report.videos_tracked += 1
        for stale in tracks_dir.glob("[!.]*.parquet") if tracks_dir.is_dir() else []:
            if stale.stem not in hashes:
                stale.unlink()
        self.state.videos = hashes
        files = sorted(tracks_dir.glob("[!.]*.parquet")) if tracks_dir.is_dir() else []
        table = pa.concat_tables([pq.read_table(f, schema=TRACKS_SCHEMA) for f in files]) if files else TRACKS_SCHEMA.empty_table()
        self.embeddings = list_matrix(table.column("embedding"))
        tracks = table.drop_columns(["embedding", "best_bbox"]).to_pandas()
        tracks["best_bbox"] = list(list_matrix(table.column("best_bbox"))) if table.num_rows else []
        tracks["key"] = tracks.clip_id + "#" + tracks.track.astype(str)
        keep = tracks.clip_id.isin(self.clips.index).to_numpy()
        self.embeddings = self.embeddings[keep] if len(self.embeddings) else self.embeddings
        self.report.tracks = int(keep.sum())
        return tracks[keep].reset_index(drop=True)

    # ---------------------------------------------------------------- 2. matching

    def match(self, tracks: pd.DataFrame) -> pd.DataFrame:
        """Best and runner-up person per track, rescoring only what a gallery change can affect."""
        ids = self.templates.person_ids
        revisions = {str(p): int(r) for p, r in zip(ids, self.templates.revisions)}
        previous = None
        path = identities_dir(self.out) / MATCHES_FILE
        if not self.fresh and self.state.gallery_id == self.gallery_id and path.exists():
            previous = pq.read_table(path).to_pandas().set_index("key")
        matches = pd.DataFrame({"key": tracks.key, "best": -1, "best_score": np.float32(-1), "second": -1,
                                "second_score": np.float32(-1)})
        need = np.ones(len(tracks), bool)
        if previous is not None and len(tracks):
            known = tracks.key.isin(previous.index).to_numpy()
            old = previous.reindex(tracks.key)
            for col in ("best", "best_score", "second", "second_score"):
                matches.loc[known, col] = old[col].to_numpy()[known]
            changed = {int(p) for p, r in revisions.items() if self.state.people.get(p) != r}
            changed |= {int(p) for p in self.state.people if p not in revisions}
            need = ~known | matches.best.isin(changed).to_numpy() | matches.second.isin(changed).to_numpy()
            present = np.isin(ids, list(changed))
            if present.any():
                best_changed = (self.embeddings @ self.templates.matrix[present].T).max(axis=1)
                need |= best_changed >= matches.second_score.to_numpy()
        if need.any():
            found = top2(self.embeddings[need], self.templates.matrix)
            matches.loc[need, "best"] = np.where(found.best >= 0, ids[np.maximum(found.best, 0)], -1)
            matches.loc[need, "second"] = np.where(found.second >= 0, ids[np.maximum(found.second, 0)], -1)
            matches.loc[need, "best_score"] = found.best_score
            matches.loc[need, "second_score"] = found.second_score
        self.report.rescored = int(need.sum())
        self.state.gallery_id, self.state.people = self.gallery_id, revisions
        return matches

    def decide(self, tracks: pd.DataFrame, matches: pd.DataFrame) -> pd.DataFrame:
        t = self.thresholds
        names = dict(zip(self.templates.person_ids.tolist(), self.templates.names))
        ok = ((matches.best >= 0) & (matches.best_score >= t.threshold)
              & (matches.best_score - matches.second_score >= t.margin)).to_numpy()
        tracks = tracks.copy()
        tracks["identity"] = np.where(ok, matches.best.map(names).fillna(UNKNOWN), UNKNOWN)
        tracks["score"] = matches.best_score.to_numpy()
        return tracks

    # ---------------------------------------------------------------- rows

    def face_rows(self, tracks: pd.DataFrame) -> pd.DataFrame:
        clips = self.clips.reset_index()
        if not self.library:
            major = tracks[tracks.major][["clip_id", "identity", "score"]]
            rows = clips[["clip_id", "start_s", "end_s"]].merge(major, on="clip_id", how="left")
            rows["identity"] = rows.identity.fillna(UNKNOWN)
            rows["track"] = None
            return rows.assign(source="gallery")[IDENTITY_SCHEMA.names]
        named = tracks[tracks.identity != UNKNOWN]
        best = named.sort_values("score", ascending=False).drop_duplicates(["clip_id", "identity"])
        spans = named.groupby(["clip_id", "identity"]).agg(start_s=("start_s", "min"), end_s=("end_s", "max"))
        rows = best[["clip_id", "identity", "score", "track"]].merge(spans.reset_index(), on=["clip_id", "identity"])
        nobody = clips[~clips.clip_id.isin(rows.clip_id)][["clip_id"]]
        nobody = nobody.merge(tracks.groupby("clip_id").score.max().reset_index(), on="clip_id", how="left")
        nobody = nobody.assign(identity=UNKNOWN, track=None, start_s=None, end_s=None)
        rows = pd.concat([rows, nobody], ignore_index=True) if len(nobody) else rows
        return rows.assign(source="gallery")[IDENTITY_SCHEMA.names].sort_values(["clip_id", "identity"])

    # ---------------------------------------------------------------- 3. propagation

    def propagate(self, rows: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
        if self.library:
            return rows
        cues = tuple(c for c in self.options.propagation.cues() if (self.out / c.table).is_dir())
        if not cues:
            self.report.notes.append("propagation skipped: the store has no bodies or audio table "
                                     "(run the bodies or audio stage)")
            self.state.propagation = {}
            return rows
        old = previous[previous.source == "propagated"].set_index("clip_id") if len(previous) else None
        inherited: dict[str, tuple[str, float]] = {}
        done: dict[str, str] = {}
        for vid, group in rows.merge(self.clips[["video_id"]], left_on="clip_id", right_index=True).groupby("video_id"):
            labels = {c: (i if i != UNKNOWN else None) for c, i in zip(group.clip_id, group.identity)}
            digest = _digest(sorted(labels.items(), key=lambda kv: kv[0])
                             + [self.state.videos.get(vid), [c.name for c in cues], self.options.propagation])
            done[vid] = digest
            if old is not None and self.state.propagation.get(vid) == digest:
                mine = old[old.index.isin(labels)]
                inherited.update({c: (r.identity, r.score) for c, r in mine.iterrows()})
                continue
            found = propagate_video(self.out, vid, labels, self.options.propagation, cues)
            inherited.update({c: (p.identity, p.score) for c, p in found.items()})
        self.state.propagation = done
        if not inherited:
            return rows
        rows = rows.copy()
        hit = rows.clip_id.isin(inherited).to_numpy()
        rows.loc[hit, "identity"] = rows.clip_id[hit].map(lambda c: inherited[c][0])
        rows.loc[hit, "score"] = rows.clip_id[hit].map(lambda c: inherited[c][1])
        rows.loc[hit, "source"] = "propagated"
        return rows

    # ---------------------------------------------------------------- 4. unknown people

    def cluster_unknown(self, tracks: pd.DataFrame, rows: pd.DataFrame) -> None:
        propagated = set(rows.clip_id[rows.source == "propagated"])
        pick = ((tracks.identity == UNKNOWN) & ~tracks.clip_id.isin(propagated)).to_numpy()
        if not self.library:
            pick = pick & tracks.major.to_numpy(bool)
        chosen = tracks[pick]
        key = _digest(sorted(chosen.key + "@" + chosen.video_id.map(self.state.videos))
                      + [self.options.clustering, self.min_quality])
        previous = read_clusters(self.out)
        if key == self.state.unknown_key and not self.fresh:
            self.report.clusters = int(previous.cluster_id.nunique())
            return
        labels = cluster_faces(self.embeddings[pick], self.options.clustering, self.settings["link"],
                               chosen.quality.to_numpy(), self.min_quality, chosen.n_faces.to_numpy())
        before = dict(zip(previous.clip_id + "#" + previous.track.astype(str), previous.cluster_id))
        ids, self.state.next_cluster_id = stable_ids(chosen.key.tolist(), labels, before, self.state.next_cluster_id)
        members = chosen.assign(cluster_id=ids)[ids >= 0]
        best = members.sort_values("quality", ascending=False).drop_duplicates("cluster_id")
        members = members.assign(representative=members.key.isin(best.key))
        old_reps = set(previous.clip_id[previous.representative] + "#" + previous.track[previous.representative].astype(str)
                       + "@" + previous.cluster_id[previous.representative].astype(str))
        for r in best.itertuples():
            crop = crop_path(self.out, int(r.cluster_id))
            if f"{r.key}@{r.cluster_id}" in old_reps and crop.exists():
                continue
            video = self._video_path(r.video_id)
            if video is None or not write_crop(crop, video, float(r.best_time_s), np.asarray(r.best_bbox)):
                self.report.notes.append(f"no face crop for unknown person {r.cluster_id}: video {r.video_id} unreadable")
        gone = set(previous.cluster_id) - set(members.cluster_id)
        for cluster_id in gone:
            crop_path(self.out, int(cluster_id)).unlink(missing_ok=True)
        write_clusters(self.out, members[["cluster_id", "clip_id", "video_id", "track", "representative"]])
        self.state.unknown_key = key
        self.report.clusters = int(members.cluster_id.nunique())

    def _video_path(self, video_id: str) -> Path | None:
        from vidpipe.store import read_table

        candidates = [self.videos.path.get(video_id)]
        candidates += read_table(self.out, "paths", ["path", "video_id"]).query("video_id == @video_id").path.tolist()
        return next((Path(p) for p in candidates if p and Path(p).is_file()), None)

    # ---------------------------------------------------------------- the pass

    def run(self) -> TagReport:
        previous = read_identities(self.out)
        previous = previous[previous.source.isin(["gallery", "propagated"])]
        tracks = self.update_tracks()
        matches = self.match(tracks)
        tracks = self.decide(tracks, matches)
        rows = self.propagate(self.face_rows(tracks), previous)
        self.cluster_unknown(tracks, rows)
        write_identities(self.out, "tags", rows)
        with atomic_path(identities_dir(self.out) / MATCHES_FILE) as tmp:
            pq.write_table(pa.Table.from_pandas(matches, schema=MATCHES_SCHEMA, preserve_index=False), tmp)
        write_timeline(self.out, timeline(self.out, merge_gap_s=self.options.merge_gap_s))
        self.state.settings = self.settings
        self.state.save(self.out)
        r = self.report
        r.named = int(rows.clip_id[(rows.source == "gallery") & (rows.identity != UNKNOWN)].nunique())
        r.propagated = int((rows.source == "propagated").sum())
        r.unknown = r.clips - r.named - r.propagated
        r.changed = _changed_clips(previous, rows)
        return r


def _changed_clips(before: pd.DataFrame, after: pd.DataFrame) -> int:
    """Clips whose (identity, source) rows differ between two taggings."""
    a, b = ({(c, i, s) for c, i, s in zip(r.clip_id.tolist(), r.identity.tolist(), r.source.tolist())}
            for r in (before, after))
    return len({c for c, _, _ in a ^ b})


def tag(out: str | Path, db: str | Path, options: TagOptions | None = None) -> TagReport:
    """Tag every kept clip of the store `out` with the people of gallery `db` (incremental:
    see the module docstring). Writes OUT/identities/tags.parquet, OUT/tracks/,
    OUT/unknown/ and OUT/timeline.json|csv. One tagging of a store at a time: a second
    refuses (`store_lock`)."""
    with store_lock(out):
        return _tag(Path(out), db, options)


def _tag(out: Path, db: str | Path, options: TagOptions | None) -> TagReport:
    options = options or TagOptions()
    store_fp = store_fingerprint(out)
    with Gallery.open(db) as gallery:
        fingerprint, templates = gallery.fingerprint, gallery.templates()
        if fingerprint is None or not templates.names:
            raise IdentitiesError(f"gallery {db} has no people with a usable face: enrol some with "
                                  f"`vidpipe enroll DIR --db {db}`")
        require_same(fingerprint, store_fp, str(db), str(out))
        saved, gallery_id = gallery.calibration, gallery.gallery_id
        named = [int(s.path.rpartition("#")[2]) for s in gallery.sources(under=f"cluster:{out.absolute()}#")]
    if options.threshold is not None and options.margin is not None:
        thresholds = Thresholds(options.threshold, options.margin)
    else:
        base = default_thresholds(fingerprint, saved)
        thresholds = Thresholds(base.threshold if options.threshold is None else options.threshold,
                                base.margin if options.margin is None else options.margin)
    # Tracks do not follow --threshold (changing it re-decides, it does not re-track).
    link = options.link if options.link is not None else DEFAULTS.get(fingerprint.embedder_key, thresholds).threshold
    min_quality = QUALITY_FLOORS.get(fingerprint.embedder_key)
    return _Tagger(out, templates, gallery_id, thresholds, _store_settings(out, link, min_quality), options,
                   named).run()
