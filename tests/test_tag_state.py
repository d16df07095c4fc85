"""Tagging state and its tables stay consistent when `tag` is killed at any write, when
its state file is lost, and when two `tag` or `enroll` run at once (synthetic stores of
constructed embeddings, as in test_identities_tag.py: no models run)."""

from __future__ import annotations

import importlib

import pytest
from click.testing import CliRunner

from test_identities_tag import ALICE, DAVE, E, ERIN, FRANK, OPTIONS, gallery_of, person_clip, stranger_clips
from vidpipe.cli import main
from vidpipe.identities import IdentitiesError, tag
from vidpipe.identities.cluster import read_clusters
from vidpipe.identities.locks import gallery_lock, store_lock
from vidpipe.identities.synthetic import write_store

tag_module = importlib.import_module("vidpipe.identities.tag")  # `vidpipe.identities.tag` is also the function


class Killed(BaseException):
    """A kill at a write point (BaseException: nothing catches it on the way out)."""


def clusters_by_person(out) -> dict[int, list[str]]:
    members = read_clusters(out)
    return {int(c): sorted(g.clip_id) for c, g in members.groupby("cluster_id")}


def kill_at(monkeypatch, point: str) -> None:
    def killed(*args, **kwargs):
        raise Killed(point)

    if point == "state":
        monkeypatch.setattr(tag_module._State, "save", killed)
    else:
        monkeypatch.setattr(tag_module, point, killed)


@pytest.mark.parametrize("point", ["write_clusters", "write_identities", "atomic_path", "write_timeline", "state",
                                   "state lost"])
def test_a_kill_at_any_write_never_hands_out_a_cluster_id_twice(tmp_path, monkeypatch, point):
    """dave is unknown person 1; a tag that also finds frank is killed at `point` (or its
    state file is lost afterwards); the next tag, which also finds erin, must keep three
    people apart. Written last, the state used to hand erin frank's id (or dave's)."""
    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0)]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    tag(out, db, OPTIONS)
    write_store(out, {"v2": stranger_clips(FRANK, 0.0)})
    if point == "state lost":
        tag(out, db, OPTIONS)
        (out / "identities" / tag_module.STATE_FILE).unlink()
    else:
        with monkeypatch.context() as m:
            kill_at(m, point)
            with pytest.raises(Killed):
                tag(out, db, OPTIONS)
    write_store(out, {"v3": stranger_clips(ERIN, 0.0)})
    assert tag(out, db, OPTIONS).clusters == 3
    people = clusters_by_person(out)
    assert sorted(people.values()) == [["v1-0001", "v1-0002", "v1-0003"], ["v2-0000", "v2-0001", "v2-0002"],
                                       ["v3-0000", "v3-0001", "v3-0002"]], people
    assert people[1] == ["v1-0001", "v1-0002", "v1-0003"]  # dave keeps his id


def test_a_named_cluster_id_is_never_reused_after_the_state_is_lost(tmp_path):
    from vidpipe.identities.people import name_cluster

    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0), *stranger_clips(FRANK, 8.0)]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    tag(out, db, OPTIONS)
    top = max(clusters_by_person(out))
    name_cluster(out, db, top, "Frank", OPTIONS)  # the gallery now holds cluster:<store>#top
    (out / "identities" / tag_module.STATE_FILE).unlink()
    write_store(out, {"v2": stranger_clips(ERIN, 0.0)})
    tag(out, db, OPTIONS)
    assert top not in clusters_by_person(out) and len(clusters_by_person(out)) == 2


def test_a_second_tag_or_enroll_refuses_in_one_line(tmp_path):
    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0)]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    with store_lock(out):  # a `tag` running on the store
        result = CliRunner().invoke(main, ["tag", str(out), "--db", str(db), "--threshold", "0.5", "--margin", "0.1"])
        assert result.exit_code == 1 and "another vidpipe process" in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        with pytest.raises(IdentitiesError, match="another vidpipe process"):
            tag(out, db, OPTIONS)
    assert not (out / "identities" / "tags.parquet").exists()
    with gallery_lock(db):  # an `enroll` running on the gallery
        photos = tmp_path / "people" / "bob"
        photos.mkdir(parents=True)
        (photos / "1.jpg").write_bytes(b"not really")
        result = CliRunner().invoke(main, ["enroll", str(photos.parent), "--db", str(db)])
        assert result.exit_code == 1 and "another vidpipe process" in result.output, result.output
    tag(out, db, OPTIONS)  # free again once the other is done
    assert clusters_by_person(out) == {1: ["v1-0001", "v1-0002", "v1-0003"]}


def test_a_tag_in_another_process_is_refused_and_a_killed_one_frees_the_store(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "store"
    write_store(out, {"v1": [person_clip(0.0, E[ALICE]), *stranger_clips(DAVE, 2.0)]})
    db = gallery_of(tmp_path / "g.db", {"alice": [E[ALICE]]})
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom vidpipe.identities.locks import store_lock\n"
                               "with store_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IdentitiesError, match="another vidpipe process"):
            tag(out, db, OPTIONS)
    finally:
        holder.kill()
        holder.wait()
    assert tag(out, db, OPTIONS).clusters == 1  # SIGKILL released the lock
