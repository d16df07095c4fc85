"""Tagging on stores of constructed embeddings (exact expectations): dataset and library
mode, incremental re-tagging, propagation by clothes, unknown people, timelines, search
index, and bad input through the CLI. No models run here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vidpipe.cli import main
from vidpipe.identities import Gallery, IdentitiesError, TagOptions, read_identities, resolve, tag, timeline
from vidpipe.identities.cluster import ClusterOptions, read_clusters, stable_ids, unknown_people
from vidpipe.identities.encoder import FACE_TASKS, Fingerprint
from vidpipe.identities.gallery import GalleryFace
from vidpipe.identities.index import FaceIndex, face_index
from vidpipe.identities.people import name_cluster
from vidpipe.identities.propagate import propagate
from vidpipe.identities.synthetic import SYNTHETIC_FINGERPRINT, SyntheticClip, SyntheticFace, write_store
from vidpipe.identities.tracks import ClipFaces, group_faces

DIM = 16
E = np.eye(DIM, dtype=np.float32)  # one direction per person
ALICE, BOB, CAROL, DAVE, ERIN, FRANK = range(6)
OPTIONS = TagOptions(threshold=0.5, margin=0.1, link=0.5)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def person_clip(start: float, embedding, n: int = 4, x: float = 100.0, bodies=()) -> SyntheticClip:
    faces = [SyntheticFace(start + 0.25 * i, unit(embedding), (x, 100, x + 100, 220), 20.0 - i) for i in range(n)]
    return SyntheticClip(start, start + 2.0, faces, list(bodies))


def gallery_of(path: Path, people: dict[str, list]) -> Path:
    with Gallery.open(path, create=True) as g:
        g.require_fingerprint(SYNTHETIC_FINGERPRINT)
        for name, embeddings in people.items():
            add(g, name, embeddings)
    return path


def add(g: Gallery, name: str, embeddings: list, source: str | None = None) -> None:
    faces = [GalleryFace(unit(e), (0, 0, 1, 1), 0.9, 20.0) for e in embeddings]
    g.put_source(name, source or f"/photos/{name}/{len(g.sources())}.jpg", "photo", faces)


def rows_by_clip(out: Path) -> dict[str, tuple]:
    rows = read_identities(out)
    return {c: tuple(sorted(zip(g.identity, g.source))) for c, g in rows.groupby("clip_id")}


# ---------------------------------------------------------------- dataset mode, incremental


@pytest.fixture
def dataset_store(tmp_path):
    out = tmp_path / "store"
    write_store(out, {"v1": [
        person_clip(0.0, E[ALICE] + 0.3 * E[BOB]),  # alice, runner-up bob at 0.287
        person_clip(2.0, E[BOB] + 0.3 * E[ALICE]),  # bob, runner-up alice at 0.287
        person_clip(4.0, E[DAVE]),  # a stranger: 0 to everyone
        SyntheticClip(6.0, 8.0),  # no face at all
    ]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]], "bob": [E[BOB]]})
    return out, db


def test_dataset_mode_one_row_per_clip_named_or_unknown(dataset_store):
    out, db = dataset_store
    report = tag(out, db, OPTIONS)
    rows = read_identities(out).set_index("clip_id")
    assert rows.identity.to_dict() == {"v1-0000": "alice", "v1-0001": "bob", "v1-0002": "unknown", "v1-0003": "unknown"}
    assert (rows.source == "gallery").all() and rows.track.isna().all()
    assert rows.score["v1-0000"] == pytest.approx(1 / np.sqrt(1.09), abs=1e-5)
    assert np.isnan(rows.score["v1-0003"])  # no face: no score
    assert rows.loc["v1-0001", ["start_s", "end_s"]].tolist() == [2.0, 4.0]
    assert (report.mode, report.clips, report.named, report.unknown, report.rescored) == ("dataset", 4, 2, 2, 3)


def test_margin_to_the_runner_up_says_unknown(dataset_store):
    out, db = dataset_store
    tag(out, db, TagOptions(threshold=0.5, margin=0.8, link=0.5))  # 0.958 - 0.287 < 0.8
    assert set(read_identities(out).identity) == {"unknown"}


def test_new_videos_are_the_only_clips_tagged_again(dataset_store):
    out, db = dataset_store
    tag(out, db, OPTIONS)
    before = rows_by_clip(out)
    write_store(out, {"v2": [person_clip(0.0, E[BOB])]})
    report = tag(out, db, OPTIONS)
    assert (report.videos_tracked, report.rescored, report.changed) == (1, 1, 1)
    after = rows_by_clip(out)
    assert after == {**before, "v2-0000": (("bob", "gallery"),)}
    again = tag(out, db, OPTIONS)
    assert (again.videos_tracked, again.rescored, again.changed) == (0, 0, 0)


def fresh_tag(out: Path, db: Path, tmp: Path) -> dict[str, tuple]:
    """What tagging a copy of the store from scratch gives."""
    copy = tmp / "fresh"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("identities", "tracks", "unknown", "index"))
    tag(copy, db, OPTIONS)
    return rows_by_clip(copy)


def test_gallery_changes_rescore_only_the_clips_they_can_change(dataset_store, tmp_path):
    out, db = dataset_store
    tag(out, db, OPTIONS)
    with Gallery.open(db) as g:  # carol scores 0 everywhere: only the stranger's tie (0 >= 0) is re-matched
        add(g, "carol", [E[CAROL]])
    assert tag(out, db, OPTIONS).rescored == 1
    assert rows_by_clip(out) == fresh_tag(out, db, tmp_path)
    with Gallery.open(db) as g:
        add(g, "dave", [E[DAVE]])
    report = tag(out, db, OPTIONS)
    assert (report.rescored, report.changed) == (1, 1)
    assert rows_by_clip(out)["v1-0002"] == (("dave", "gallery"),)
    assert rows_by_clip(out) == fresh_tag(out, db, tmp_path)
    with Gallery.open(db) as g:  # bob was best for clip 1 and runner-up for clip 0
        g.remove("bob")
    report = tag(out, db, OPTIONS)
    assert (report.rescored, report.changed) == (2, 1)
    assert rows_by_clip(out)["v1-0001"] == (("unknown", "gallery"),)
    assert rows_by_clip(out) == fresh_tag(out, db, tmp_path)
    with Gallery.open(db) as g:
        g.rename("alice", "Alice A.")
    report = tag(out, db, OPTIONS)
    assert (report.rescored, report.changed) == (0, 1)
    assert rows_by_clip(out)["v1-0000"] == (("Alice A.", "gallery"),)
    assert rows_by_clip(out) == fresh_tag(out, db, tmp_path)


def test_changed_thresholds_redecide_without_rematching(dataset_store):
    out, db = dataset_store
    tag(out, db, OPTIONS)
    report = tag(out, db, TagOptions(threshold=0.99, margin=0.0, link=0.5))
    assert report.rescored == 0 and report.changed == 2 and report.named == 0


# ---------------------------------------------------------------- library mode


def test_library_mode_lists_every_recognised_person_with_their_track(tmp_path):
    out = tmp_path / "store"
    two_shot = SyntheticClip(0.0, 3.0, [
        *[SyntheticFace(0.25 * i, unit(E[ALICE] + 0.05 * E[i + 8]), (10, 10, 110, 130), 20.0) for i in range(4)],
        *[SyntheticFace(0.25 * i + 1.0, unit(E[BOB] + 0.05 * E[i + 8]), (300, 10, 400, 130), 20.0) for i in range(4)],
        *[SyntheticFace(0.25 * i, unit(E[DAVE]), (600, 10, 700, 130), 20.0) for i in range(2)],
    ])
    nobody = SyntheticClip(3.0, 5.0, [SyntheticFace(3.0, unit(E[ERIN]))])
    write_store(out, {"lib": [two_shot, nobody]}, library=True)
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]], "bob": [E[BOB]]})
    report = tag(out, db, OPTIONS)
    rows = read_identities(out).sort_values(["clip_id", "identity"]).reset_index(drop=True)
    assert rows[["clip_id", "identity"]].values.tolist() == [["lib-0000", "alice"], ["lib-0000", "bob"],
                                                             ["lib-0001", "unknown"]]
    assert rows.track[:2].tolist() == [0, 2] and rows.track.isna().tolist() == [False, False, True]
    # alice from her first face to one sampling period (0.25 s) after her last; bob likewise
    assert rows.loc[0, ["start_s", "end_s"]].tolist() == [0.0, 1.0]
    assert rows.loc[1, ["start_s", "end_s"]].tolist() == [1.0, 2.0]
    assert (report.mode, report.named, report.unknown, report.tracks) == ("library", 1, 1, 4)
    people = {p.identity: [(a.start_s, a.end_s) for a in p.appearances] for p in timeline(out)[0].people}
    assert people == {"alice": [(0.0, 1.0)], "bob": [(1.0, 2.0)]}


def faces_of(tracks: list[tuple[int, list[int], float]]) -> ClipFaces:
    """(person, frames it is in, x) -> the faces of a clip."""
    rows = [(f, p, x) for p, frames, x in tracks for f in frames]
    return ClipFaces(np.array([f * 0.25 for f, _, _ in rows]), np.array([f for f, _, _ in rows]),
                     np.array([[x, 0, x + 50, 60] for _, _, x in rows], np.float32), np.full(len(rows), 20.0),
                     np.stack([E[p] for _, p, _ in rows]), None)


def test_faces_group_into_one_track_per_person():
    # alice walks across the frame (boxes never overlap frame to frame); bob stays and turns
    # away in frames 2-3 (his face then matches his track badly, but the box is his); carol
    # leaves and comes back at another place.
    faces = faces_of([(ALICE, [0, 1, 2, 3], 0), (BOB, [0, 1, 2, 3], 500), (CAROL, [0, 1], 900), (CAROL, [3], 200)])
    faces.bbox[:4, 0] = faces.bbox[:4, 0] + np.arange(4) * 120
    faces.bbox[:4, 2] = faces.bbox[:4, 0] + 50
    faces.embedding[6:8] = unit(0.3 * E[BOB] + E[13])  # cosine 0.29 to bob's frontal face
    labels = group_faces(faces, link=0.5)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_two_faces_of_one_frame_never_share_a_track():
    faces = faces_of([(ALICE, [0, 1], 0), (ALICE, [0, 1], 500)])  # a mirror: the same face twice per frame
    assert sorted(np.bincount(group_faces(faces, link=0.5)).tolist()) == [2, 2]


# ---------------------------------------------------------------- propagation


def test_propagation_majority_vote_inside_clothes_clusters():
    b = np.eye(8, dtype=np.float32)
    tilted = unit(b[0] + 0.2 * b[5])  # cosine 1/sqrt(1.04) to b[0]
    clips = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M"]
    bodies = np.stack([b[0], b[0], tilted, b[1], b[1], b[2], b[3], b[3], b[3], b[4], b[4], b[4], b[4]])
    labels = ["alice", "alice", None, "bob", None, None, "alice", "bob", None, "carol", "carol", "dave", None]
    got = propagate(clips, bodies, labels, distance=0.3, min_share=0.5)
    assert got.keys() == {"C", "E", "M"}
    assert got["C"].identity == "alice" and got["C"].score == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)
    assert got["E"].identity == "bob" and got["E"].score == pytest.approx(1.0, abs=1e-6)
    assert got["M"].identity == "carol" and got["M"].score == pytest.approx(2 / 3, abs=1e-6)  # 2 of 3 votes
    # F: nobody labelled in its cluster; I: a tie between alice and bob


def test_tagging_propagates_inside_each_video_only(tmp_path):
    out = tmp_path / "store"
    shirt, coat = E[10], E[11]
    write_store(out, {
        "v1": [person_clip(0.0, E[ALICE], bodies=[shirt, shirt]), SyntheticClip(2.0, 4.0, [], [shirt]),
               person_clip(4.0, E[DAVE], bodies=[shirt]), SyntheticClip(6.0, 8.0, [], [coat])],
        "v2": [SyntheticClip(0.0, 2.0, [], [shirt])],  # same clothes, another video: no vote there
    })
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    report = tag(out, db, OPTIONS)
    rows = read_identities(out).set_index("clip_id")
    assert rows.identity.to_dict() == {"v1-0000": "alice", "v1-0001": "alice", "v1-0002": "alice",
                                       "v1-0003": "unknown", "v2-0000": "unknown"}
    assert rows.source.to_dict() == {"v1-0000": "gallery", "v1-0001": "propagated", "v1-0002": "propagated",
                                     "v1-0003": "gallery", "v2-0000": "gallery"}
    assert rows.score["v1-0001"] == pytest.approx(1.0, abs=1e-6)
    assert report.propagated == 2 and not report.notes


def test_voice_propagates_where_clothes_say_nothing(tmp_path):
    out = tmp_path / "store"
    shirt, coat, hers, his = E[10], E[11], E[12], E[13]
    write_store(out, {"v1": [
        SyntheticClip(0.0, 2.0, person_clip(0.0, E[ALICE]).faces, [shirt], hers, True),
        SyntheticClip(2.0, 4.0, [], [coat], unit(hers + 0.1 * E[14]), True),  # new clothes, her voice
        SyntheticClip(4.0, 6.0, [], [coat], hers, False),  # her voice, but not the person on screen
        SyntheticClip(6.0, 8.0, [], [shirt], his, True),  # her clothes, bob's voice: clothes come first
        SyntheticClip(8.0, 10.0, person_clip(8.0, E[BOB]).faces, [E[15]], his, True),
        SyntheticClip(10.0, 12.0, [], [shirt], E[6], True),  # inherits alice by clothes ...
        SyntheticClip(12.0, 14.0, [], [E[7]], E[6], True),  # ... which does not vote: nothing to inherit
    ]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]], "bob": [E[BOB]]})
    report = tag(out, db, OPTIONS)
    rows = read_identities(out).set_index("clip_id")
    assert rows.identity.tolist() == ["alice", "alice", "unknown", "alice", "bob", "alice", "unknown"]
    assert rows.source.tolist() == ["gallery", "propagated", "gallery", "propagated", "gallery", "propagated", "gallery"]
    assert rows.score.iloc[1] == pytest.approx(1 / np.sqrt(1.01), abs=1e-5) and report.propagated == 3


def test_tag_command_summary(dataset_store):
    out, db = dataset_store
    result = CliRunner().invoke(main, ["tag", str(out), "--db", str(db), "--threshold", "0.5", "--margin", "0.1",
                                       "--min-cluster-size", "2", "--body-distance", "0.2"])
    assert result.exit_code == 0, result.output
    assert "4 clips (dataset mode, threshold 0.500, margin 0.100): 2 named by face, 0 by clothes or voice" in result.output


def test_no_bodies_table_is_said_not_hidden(dataset_store):
    out, db = dataset_store
    assert any("no bodies or audio table" in n for n in tag(out, db, OPTIONS).notes)


# ---------------------------------------------------------------- unknown people


def test_cluster_ids_survive_reclustering():
    ids, next_id = stable_ids(["a", "b", "c", "d", "e"], np.array([1, 1, 0, 0, -1]), {"a": 7, "b": 7, "c": 4}, 9)
    assert ids.tolist() == [7, 7, 4, 4, -1] and next_id == 9
    ids, next_id = stable_ids(["a", "b", "x", "y"], np.array([0, 0, 1, 1]), {"a": 7, "b": 4}, 9)
    assert ids.tolist() == [4, 4, 9, 9] and next_id == 10  # a tie goes to the lower old id; the rest is new


def stranger_clips(person: int, start: float, n: int = 3) -> list[SyntheticClip]:
    return [person_clip(start + 2 * i, E[person] + 0.1 * E[12 + i]) for i in range(n)]


def test_unknown_people_clustered_with_stable_ids_and_named(tmp_path):
    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0), *stranger_clips(ERIN, 8.0)]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    assert tag(out, db, OPTIONS).clusters == 2
    first = {p.cluster_id: p.clip_ids for p in unknown_people(out)}
    dave = next(c for c, clips in first.items() if "v1-0001" in clips)
    assert sorted(map(sorted, first.values())) == [["v1-0001", "v1-0002", "v1-0003"], ["v1-0004", "v1-0005", "v1-0006"]]
    write_store(out, {"v2": stranger_clips(FRANK, 0.0)})
    assert tag(out, db, OPTIONS).clusters == 3
    second = {p.cluster_id: p.clip_ids for p in unknown_people(out)}
    assert {c: second[c] for c in first} == first and set(second) - set(first) == {3}
    report = name_cluster(out, db, dave, "Dave", OPTIONS)
    assert report.clusters == 2 and dave not in set(read_clusters(out).cluster_id)
    rows = read_identities(out).set_index("clip_id").identity
    assert [rows[c] for c in first[dave]] == ["Dave"] * 3
    assert {p.cluster_id: p.clip_ids for p in unknown_people(out)} == {c: v for c, v in second.items() if c != dave}
    with pytest.raises(IdentitiesError, match="no unknown person 99"):
        name_cluster(out, db, 99, "Nobody", OPTIONS)


def test_min_cluster_size_is_respected_and_strangers_stay_apart(tmp_path):
    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0, n=2)],
                      "v2": [person_clip(0.0, E[ERIN]), person_clip(2.0, E[FRANK]), person_clip(4.0, E[CAROL])]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    assert tag(out, db, OPTIONS).clusters == 0  # dave is in 2 clips only; erin, frank and carol in 1 each
    assert tag(out, db, TagOptions(0.5, 0.1, 0.5, clustering=ClusterOptions(min_cluster_size=2))).clusters == 1
    assert [p.clip_ids for p in unknown_people(out)] == [["v1-0001", "v1-0002"]]


def test_one_unknown_person_alone_is_a_cluster(tmp_path):
    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0)]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    assert tag(out, db, OPTIONS).clusters == 1  # HDBSCAN alone never calls everything one cluster


# ---------------------------------------------------------------- timeline


def test_timeline_merges_adjacent_clips_and_keeps_gaps(tmp_path):
    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), person_clip(2.0, E[ALICE]), person_clip(4.0, E[BOB]),
                             person_clip(6.4, E[ALICE]), person_clip(9.0, E[ALICE]), person_clip(11.3, E[ALICE])]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]], "bob": [E[BOB]]})
    tag(out, db, OPTIONS)
    [video] = timeline(out)
    got = {p.identity: [(a.start_s, a.end_s, len(a.clip_ids)) for a in p.appearances] for p in video.people}
    # gaps: 0 (adjacent clips), 0.6 s (kept apart), 0.3 s (joined: under merge_gap_s = 0.5)
    assert got == {"alice": [(0.0, 4.0, 2), (6.4, 8.4, 1), (9.0, 13.3, 2)], "bob": [(4.0, 6.0, 1)]}
    assert [p.identity for p in video.people] == ["alice", "bob"]  # most seen first
    csv = (out / "timeline.csv").read_text().splitlines()
    assert csv[0].startswith("video_id,path,identity,start_s,end_s") and len(csv) == 5
    assert pd.read_json(out / "timeline.json").videos[0]["people"][0]["total_s"] == pytest.approx(10.3)


def test_timeline_includes_the_fusion_models_predictions(dataset_store):
    out, db = dataset_store
    tag(out, db, OPTIONS)
    pd.DataFrame({"clip_id": ["v1-0003"], "identity": ["carol"], "score": [0.9]}).to_parquet(
        out / "identities" / "predictions.parquet")  # what `vidpipe predict` writes
    merged = read_identities(out)
    assert merged.set_index("clip_id").loc["v1-0003"].query("source == 'model'").identity.tolist() == ["carol"]
    people = {p.identity for p in timeline(out)[0].people}
    assert people == {"alice", "bob", "carol"}


def test_each_clip_keeps_its_most_trusted_source():
    rows = pd.DataFrame({
        "clip_id": ["a", "a", "b", "b", "c", "c", "d"],
        "identity": ["alice", "bob", "carol", "dave", "unknown", "erin", "0"],
        "source": ["model", "gallery", "propagated", "model", "gallery", "propagated", "model"],
    })
    kept = resolve(rows).set_index("clip_id").identity.to_dict()
    assert kept == {"a": "bob", "b": "dave", "c": "erin"}  # 'unknown' and the model's noise class '0' name nobody


# ---------------------------------------------------------------- index


def test_index_block_products_equal_brute_force_and_follow_the_store(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    out = tmp_path / "store"
    clips = [SyntheticClip(2.0 * i, 2.0 * i + 2, [SyntheticFace(2.0 * i + 0.1 * j, rng.normal(size=DIM))
                                                  for j in range(5)]) for i in range(20)]
    write_store(out, {"v1": clips})
    monkeypatch.setattr("vidpipe.identities.index.BLOCK_ROWS", 7)  # several blocks
    index = face_index(out)
    q = unit(rng.normal(size=DIM))
    brute = np.concatenate([[unit(f.embedding) @ q for f in sorted(c.faces, key=lambda f: f.time_s)] for c in clips])
    assert np.allclose(index.scores(q), brute, atol=1e-6)
    assert np.allclose(index.best_per_clip(index.scores(q)), brute.reshape(20, 5).max(1), atol=1e-6)
    assert isinstance(face_index(out).embeddings, np.memmap)  # the second time: from the cache
    write_store(out, {"v2": [SyntheticClip(0.0, 2.0, [SyntheticFace(0.5, q)])]})
    index = face_index(out)
    assert len(index) == 101 and index.clips[int(np.argmax(index.best_per_clip(index.scores(q))))] == "v2-0000"
    assert len(FaceIndex.from_rows(np.array([], object), np.zeros(0), np.zeros((0, DIM)))) == 0


# ---------------------------------------------------------------- bad input


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidpipe: error: "), result.output
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(dataset_store, tmp_path):
    out, db = dataset_store
    runner = CliRunner()
    empty = gallery_of(tmp_path / "empty.db", {"alice": [E[ALICE]]})
    with Gallery.open(empty) as g:
        g.remove("alice")
    assert "has no people" in one_line_error(runner.invoke(main, ["tag", str(out), "--db", str(empty)]))
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not SQLite\n" * 100)
    for args in (["tag", str(out)], ["gallery", "list"], ["gallery", "rename", "a", "b"]):
        assert "is not a vidpipe gallery" in one_line_error(runner.invoke(main, [*args, "--db", str(corrupt)]))
    assert corrupt.read_bytes() == b"this is not SQLite\n" * 100
    other = tmp_path / "other.db"
    with Gallery.open(other, create=True) as g:
        g.require_fingerprint(Fingerprint.from_dict({t: {"name": "dlib", "weights": []} for t in FACE_TASKS}))
        add(g, "alice", [E[ALICE]])
    line = one_line_error(runner.invoke(main, ["tag", str(out), "--db", str(other)]))
    assert "not comparable" in line and "dlib" in line and "synthetic" in line
    notes = tmp_path / "notes"
    (notes / "alice").mkdir(parents=True)
    (notes / "alice" / "readme.txt").write_text("no photos here")
    new_db = tmp_path / "new.db"
    assert "no photos or videos" in one_line_error(runner.invoke(main, ["enroll", str(notes), "--db", str(new_db)]))
    assert not new_db.exists()
    assert not (out / "identities").exists() and not (out / "tracks").exists()
    assert "no person 'carol'" in one_line_error(runner.invoke(main, ["gallery", "remove", "carol", "--db", str(db)]))


def test_search_refuses_a_store_of_other_backends(dataset_store, tmp_path):
    out, _ = dataset_store
    photo = tmp_path / "face.png"
    photo.write_bytes(b"")  # never read: the backends are compared first
    line = one_line_error(CliRunner().invoke(main, ["search", str(photo), str(out)]))
    assert "would be embedded with" in line and "store" in line and "synthetic" in line
    assert not (out / "index").exists()


def test_gallery_schema_is_versioned_and_other_files_refused(tmp_path):
    import sqlite3

    from vidpipe.identities.gallery import SCHEMA_VERSION

    path = tmp_path / "g.db"
    Gallery.open(path, create=True).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "meta", "people", "sources", "faces"}
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(IdentitiesError, match="newer than this vidpipe"):
        Gallery.open(path)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE notes (x)")
    with pytest.raises(IdentitiesError, match="not a vidpipe gallery"):
        Gallery.open(other)


def test_gallery_rename_onto_an_existing_person_merges_them(tmp_path):
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]], "ally": [E[ALICE] + 0.1 * E[BOB]], "bob": [E[BOB]]})
    with Gallery.open(db) as g:
        g.rename("ally", "alice")
        people = {p.name: (p.n_faces, p.n_sources) for p in g.people()}
        t = g.templates()
    assert people == {"alice": (2, 2), "bob": (1, 1)}
    assert t.names == ["alice", "bob"] and np.allclose(np.linalg.norm(t.matrix, axis=1), 1)
