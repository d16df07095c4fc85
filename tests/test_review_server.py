"""The review server over HTTP, without a browser, on synthetic stores (real video files):
path safety, tokens and CSRF, Range requests, leases, persistence across restarts, the
blind second pass and agreement statistics, non-loopback refusal."""

from __future__ import annotations

import http.client
import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from review_store import synthetic_store
from vidpipe.cli import main
from vidpipe.identities import read_identities, resolve
from vidpipe.review import ReviewDB, ReviewError, agreement, close_server, make_server, review_db_path
from vidpipe.review.agreement import OVERALL, cohen_kappa


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    mine = synthetic_store(root / "mine", {"ada": 4, "bob": 3}, unknown=1)
    other = synthetic_store(root / "other", {"cy": 2}, seed=1)  # another video: other clip ids
    return mine, other


class Client:
    """Raw HTTP (no path normalisation) with the page's cookie and CSRF token."""

    def __init__(self, server) -> None:
        self.server = server
        self.port = server.port
        self.cookie = f"vidpipe_review={server.app.token}"
        self.csrf = server.app.csrf

    def request(self, method: str, path: str, body=None, headers=None, auth: bool = True):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Cookie": self.cookie} if auth else {}
        if body is not None:
            body = json.dumps(body)
            h.update({"Content-Type": "application/json", "X-CSRF-Token": self.csrf})
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data

    def post(self, path: str, body: dict, **kw):
        status, _, data = self.request("POST", path, body, **kw)
        return status, json.loads(data) if data.startswith(b"{") else data


@pytest.fixture()
def served(stores, tmp_path):
    """A server on the first store, with its own review file."""
    (out, db), _ = stores
    servers = []

    def start(port: int = 0):
        server = make_server(out, db, port=port, review_db=tmp_path / "review.db")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        if s.socket.fileno() != -1:
            close_server(s)


def test_only_clip_ids_of_this_store_are_served(stores, served, tmp_path):
    (out, _), (other_out, _) = stores
    client = Client(served())
    clips = pd.read_parquet(out / "clips")
    mine = clips.clip_id[0]
    theirs = pd.read_parquet(other_out / "clips").clip_id[0]
    status, headers, data = client.request("GET", f"/media/{mine}")
    video = Path(pd.read_parquet(out / "videos").path[0])
    assert status == 200 and data == video.read_bytes() and headers["Accept-Ranges"] == "bytes"
    # links planted in the store, and the store's own files, are never reachable
    (out / "planted").symlink_to("/etc/passwd")
    (out / "clips" / "planted.mp4").symlink_to("/etc/passwd")
    try:
        for path in ["/media/../videos", f"/media/{mine}/../../etc/passwd", "/media/..%2f..%2fetc%2fpasswd",
                     "/static/..%2f..%2fserver.py", "/static/%2e%2e/%2e%2e/db.py", "/%2e%2e/%2e%2e/etc/passwd",
                     "/etc/passwd", "//etc/passwd", f"/media/{out}/planted", "/media//etc/passwd", "/planted",
                     "/clips/planted.mp4", "/media/planted", f"/crop/{mine}/../../planted", "/static/", "/media/",
                     "/static", f"/media/{theirs}", f"/crop/{theirs}/0.jpg", f"/media/{mine.upper()}",
                     f"/media/{mine}%00", "/api/", "/clips/", f"/store/{mine}", str(video)]:
            status, _, data = client.request("GET", path)
            assert status == 404 and b"root:" not in data, path
    finally:
        (out / "planted").unlink()
        (out / "clips" / "planted.mp4").unlink()
    status, body = client.post("/api/decide", {"tab": "t", "clip_id": theirs, "verdict": "noise"})
    assert status == 409 and "no such clip" in body["error"]


def test_a_video_swapped_for_a_link_is_not_served(tmp_path):
    out, db = synthetic_store(tmp_path / "s", {"ada": 2})
    video = Path(pd.read_parquet(out / "videos").path[0])
    clip = pd.read_parquet(out / "clips").clip_id[0]
    server = make_server(out, db, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(server)
        assert client.request("GET", f"/media/{clip}")[0] == 200
        video.rename(video.with_suffix(".bak"))
        video.symlink_to("/etc/passwd")  # a link planted where the video was
        status, _, data = client.request("GET", f"/media/{clip}")
        assert status == 404 and b"root:" not in data
    finally:
        close_server(server)


def test_tokens_csrf_and_host(served):
    server = served()
    client = Client(server)
    assert client.request("GET", "/", auth=False)[0] == 403
    assert client.request("GET", "/?token=wrong", auth=False)[0] == 403
    status, headers, _ = client.request("GET", f"/?token={server.app.token}", auth=False)
    assert status == 303 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    status, _, page = client.request("GET", "/")
    assert status == 200 and server.app.csrf.encode() in page
    assert client.request("GET", "/", headers={"Host": "evil.example:80"})[0] == 404  # DNS rebinding
    body = {"tab": "t1", "pass": 1}
    assert client.post("/api/next", body, headers={"X-CSRF-Token": ""})[0] == 403
    assert client.post("/api/next", body, headers={"X-CSRF-Token": "0" * 32})[0] == 403
    assert client.post("/api/next", body, auth=False)[0] == 403
    status, data = client.post("/api/next", body)
    assert status == 200 and data["clip"]["clip_id"]
    assert client.request("PUT", "/api/decide")[0] == 404 and client.request("DELETE", "/")[0] == 404


def test_range_requests(served, stores):
    (out, _), _ = stores
    client = Client(served())
    clip = pd.read_parquet(out / "clips").clip_id[0]
    data = Path(pd.read_parquet(out / "videos").path[0]).read_bytes()
    status, headers, part = client.request("GET", f"/media/{clip}", headers={"Range": "bytes=100-199"})
    assert status == 206 and part == data[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, _, tail = client.request("GET", f"/media/{clip}", headers={"Range": "bytes=-10"})
    assert status == 206 and tail == data[-10:]
    status, _, rest = client.request("GET", f"/media/{clip}", headers={"Range": f"bytes={len(data) - 5}-"})
    assert status == 206 and rest == data[-5:]
    status, headers, _ = client.request("GET", f"/media/{clip}", headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"


def test_leases_decisions_and_restart(served, stores, tmp_path):
    (out, db), _ = stores
    server = served()
    client = Client(server)
    first = client.post("/api/next", {"tab": "a", "pass": 1})[1]["clip"]
    second = client.post("/api/next", {"tab": "b", "pass": 1})[1]["clip"]
    assert first["clip_id"] != second["clip_id"]  # two tabs, two clips
    assert client.post("/api/next", {"tab": "a", "pass": 1})[1]["clip"]["clip_id"] == first["clip_id"]  # a reload
    status, body = client.post("/api/decide", {"tab": "b", "clip_id": first["clip_id"], "verdict": "accept"})
    assert status == 409 and "another tab" in body["error"]
    assert first["proposed"] != "unknown" and first["score"] == min(c for c in _scores(out) if c is not None)
    status, body = client.post("/api/decide", {"tab": "a", "clip_id": first["clip_id"], "verdict": "accept",
                                               "reviewer": "r1"})
    assert status == 200 and body["decided"]["label"] == first["proposed"] and body["clip"]["clip_id"] != second["clip_id"]
    port = server.port
    close_server(server)  # everything on disk: the review file and review.parquet
    rows = read_identities(out)
    assert rows[(rows.source == "review")].clip_id.tolist() == [first["clip_id"]]
    restarted = served(port)
    again = Client(restarted)
    assert again.cookie == client.cookie and again.csrf == client.csrf  # the open page keeps working
    state = json.loads(again.request("GET", "/api/state?pass=1")[2])
    assert [d["clip_id"] for d in state["recent"]] == [first["clip_id"]] and state["decided"]["1"] == 1
    nxt = again.post("/api/next", {"tab": "c", "pass": 1})[1]["clip"]
    assert nxt["clip_id"] != first["clip_id"]


def _scores(out: Path) -> list[float | None]:
    tags = pd.read_parquet(out / "identities" / "tags.parquet")
    return tags.score[tags.identity != "unknown"].tolist()


def test_a_review_naming_nobody_overrules_the_tags(tmp_path):
    from vidpipe.review import publish
    from vidpipe.review.queue import StoreView

    out, db = synthetic_store(tmp_path / "s", {"ada": 3})
    clips = pd.read_parquet(out / "clips").clip_id.tolist()
    with ReviewDB(review_db_path(db)) as review:
        review.decide(clips[0], 1, "reject", "r", "ada", 0.7)
        review.decide(clips[1], 1, "noise", "r", "ada", 0.7)
        publish(out, review, StoreView(out))
    rows = read_identities(out)
    assert rows[rows.source == "review"].set_index("clip_id").identity.to_dict() == {clips[0]: "unknown", clips[1]: "0"}
    assert resolve(rows).clip_id.tolist() == [clips[2]]  # the gallery's 'ada' stands only where nobody overruled it


def test_second_pass_is_blind_and_disagreements_go_to_the_arbiter(stores, tmp_path):
    (out, db), _ = stores
    review = tmp_path / "review.db"
    server = make_server(out, db, port=0, review_db=review)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = Client(server)
        clip = c.post("/api/next", {"tab": "a", "pass": 1})[1]["clip"]
        c.post("/api/decide", {"tab": "a", "clip_id": clip["clip_id"], "verdict": "accept", "reviewer": "ann", "pass": 1})
        assert c.post("/api/next", {"tab": "a", "pass": 2, "reviewer": "ann"})[1]["clip"] is None  # not her own clips
        blind = c.post("/api/next", {"tab": "b", "pass": 2, "reviewer": "ben"})[1]["clip"]
        assert blind["clip_id"] == clip["clip_id"] and blind["earlier"] == []  # nothing of ann's decision
        status, body = c.post("/api/decide", {"tab": "b", "clip_id": clip["clip_id"], "verdict": "noise", "pass": 2,
                                              "reviewer": "ann"})
        assert status == 409 and "another reviewer" in body["error"]
        c.post("/api/decide", {"tab": "b", "clip_id": clip["clip_id"], "verdict": "noise", "reviewer": "ben", "pass": 2})
        third = c.post("/api/next", {"tab": "c", "pass": 3, "reviewer": "cat"})[1]["clip"]
        assert third["clip_id"] == clip["clip_id"]
        assert {(e["pass"], e["label"]) for e in third["earlier"]} == {(1, clip["proposed"]), (2, "0")}
        state = json.loads(c.request("GET", "/api/state?pass=3")[2])
        overall = next(a for a in state["agreement"] if a["identity"] == OVERALL)
        assert overall["clips"] == 1 and overall["agreed"] == 0 and overall["disputed"] == 1
        c.post("/api/decide", {"tab": "c", "clip_id": clip["clip_id"], "verdict": "accept", "reviewer": "cat", "pass": 3})
        assert c.post("/api/next", {"tab": "c", "pass": 3})[1]["clip"] is None
    finally:
        close_server(server)
    rows = resolve(read_identities(out))
    assert rows[rows.clip_id == clip["clip_id"]].source.tolist() == ["review"]


def test_agreement_and_cohens_kappa():
    from vidpipe.review.db import Decision

    def pair(clip, proposed, a, b):
        return [Decision(clip, 1, "assign", a, proposed, 0.5, "r1", "t"), Decision(clip, 2, "assign", b, proposed, 0.5, "r2", "t")]

    # ada: 8 clips, the two reviewers agree on 6 (4 ada, 2 rejected): po = 0.75; each said ada 5 times and
    # unknown 3 times: pe = (5/8)^2 + (3/8)^2 = 34/64; kappa = (0.75 - 34/64) / (1 - 34/64) = 7/15
    labels = [("ada", "ada")] * 4 + [("unknown", "unknown")] * 2 + [("ada", "unknown"), ("unknown", "ada")]
    decisions = [d for i, (a, b) in enumerate(labels) for d in pair(f"c{i}", "ada", a, b)]
    decisions += pair("x", "bob", "bob", "bob")
    rows = {a.identity: a for a in agreement(decisions)}
    assert (rows["ada"].clips, rows["ada"].agreed, rows["ada"].rate) == (8, 6, 0.75)
    assert rows["ada"].kappa == pytest.approx(7 / 15) and rows["ada"].disputed == 2
    assert rows["bob"].kappa is None and rows["bob"].rate == 1.0  # one label only: chance explains it all
    assert rows[OVERALL].clips == 9
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0


def test_leases_lapse_and_are_atomic_across_connections(tmp_path):
    db = ReviewDB(tmp_path / "r.db")
    other = ReviewDB(tmp_path / "r.db")  # a second server on the same file
    order = [f"{i:016x}-0000" for i in range(50)]
    got = []
    threads = [threading.Thread(target=lambda k=k: got.append((db if k % 2 else other).lease(order, 1, f"tab{k}")))
               for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == order[:20]  # twenty tabs, twenty different clips
    assert db.lease(order[:1], 1, "late", lease_s=0.0) is None
    db.conn.execute("UPDATE leases SET expires = 0 WHERE clip_id = ?", (order[0],))
    assert db.lease(order[:1], 1, "late") == order[0]  # a lapsed lease is handed on
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    other.close()


def test_refuses_a_non_loopback_address_without_a_token(stores):
    (out, db), _ = stores
    with pytest.raises(ReviewError, match="not a loopback address"):
        make_server(out, db, host="0.0.0.0")
    with pytest.raises(ReviewError, match="at least 16"):
        make_server(out, db, host="0.0.0.0", token="short")
    result = CliRunner().invoke(main, ["review", str(out), "--db", str(db), "--host", "0.0.0.0"], env={"VIDPIPE_REVIEW_TOKEN": ""})
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "not a loopback address" in result.output


def test_the_url_is_printed(stores, monkeypatch):
    (out, db), _ = stores
    import vidpipe.review.server as server_module

    join = server_module.threading.Thread.join

    def ctrl_c(thread, *args):  # Ctrl+C right after start-up, while serving
        if thread.name == "review-publisher":
            return join(thread, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(server_module.threading.Thread, "join", ctrl_c)
    result = CliRunner().invoke(main, ["review", str(out), "--db", str(db), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "open http://127.0.0.1:" in result.output and "/?token=" in result.output


def test_unplayable_videos_are_cut_for_the_browser(tmp_path):
    import av

    out, db = synthetic_store(tmp_path / "s", {"ada": 2}, codec="mpeg4", suffix=".avi")
    server = make_server(out, db, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(server)
        clip = client.post("/api/next", {"tab": "a"})[1]["clip"]
        assert (clip["t0"], clip["t1"]) == (0.0, 1.0)
        status, headers, data = client.request("GET", clip["src"])
        assert status == 200 and headers["Content-Type"] == "video/mp4"
        (tmp_path / "cut.mp4").write_bytes(data)
        with av.open(str(tmp_path / "cut.mp4")) as c:
            stream = c.streams.video[0]
            frames = list(c.decode(stream))
        times = [float(f.pts * f.time_base) for f in frames]
        assert stream.codec_context.name == "h264" and len(frames) == 10 and times[0] == 0.0 and times[-1] == 0.88  # 1 s at 10 fps
        status, _, jpeg = client.request("GET", clip["crops"][0])
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
    finally:
        close_server(server)


def test_review_file_beside_the_gallery(stores):
    (_, db), _ = stores
    assert review_db_path(db) == db.with_name("gallery.review.db")
    with pytest.raises(ReviewError, match="not a vidpipe review file"):
        ReviewDB(db)  # the gallery itself is another SQLite file
    assert os.path.exists(db)


def test_two_hundred_parallel_requests_all_succeed(served):
    """A listen backlog of 5 (socketserver's default) made most of 200 simultaneous
    connections wait out SYN retransmissions (124 of 200 timed out after 5 s)."""
    import concurrent.futures

    server = served()
    client = Client(server)
    start = threading.Barrier(200, timeout=30)

    def one(_):
        start.wait()
        conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=5)
        try:
            conn.request("GET", "/static/app.css", headers={"Cookie": client.cookie})
            return conn.getresponse().status
        except OSError as e:
            return repr(e)
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(one, range(200)))
    assert answers == [200] * 200, {a: answers.count(a) for a in set(answers)}
