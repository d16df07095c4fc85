"""The review page in the real browser (Debian's chromium through Playwright, as in
test_review_page.py) on synthetic stores with real video files: the keyboard after
Assign, and library stores with several people per clip."""

from __future__ import annotations

import threading

import pytest

from review_store import synthetic_store
from test_review_page import browser, close, latest_decision, open_page  # noqa: F401 - the module's browser
from vidpipe.review import ReviewDB, close_server, make_server


@pytest.fixture()
def serve(tmp_path):
    servers = []

    def start(out, db):
        server = make_server(out, db, port=0, review_db=tmp_path / "review.db")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        close_server(s)


def test_a_shortcut_works_right_after_assign(browser, serve, tmp_path):  # noqa: F811
    """After Assign the name box kept the focus, so the next key typed into it instead of
    deciding the next clip."""
    server = serve(*synthetic_store(tmp_path / "s", {"ada": 2, "bob": 2}))
    page = open_page(browser, server.url)
    first = page.evaluate("document.body.dataset.clip")
    page.keyboard.press("s")
    page.keyboard.type("bob")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.body.dataset.clip !== '{first}'")
    second = page.evaluate("document.body.dataset.clip")
    assert latest_decision(page) == (first, "assign")
    page.keyboard.press("a")
    page.wait_for_function(f"document.querySelector('#recent li')?.dataset.clip === '{second}'", timeout=5000)
    assert latest_decision(page) == (second, "accept") and page.input_value("#assign-name") == ""
    with ReviewDB(tmp_path / "review.db") as review:
        assert [d.verdict for d in review.decisions(1)] == ["assign", "accept"]
    close(page)


# ---------------------------------------------------------------- library stores: every person of a clip


def library_store(root):
    """A synthetic store tagged in library mode: clip 0 is a two-shot of joey (the less sure
    match, asked first) and ross, each with their own face track; the other clips show one
    of them."""
    import pandas as pd

    from vidpipe.identities.table import write_identities

    out, db = synthetic_store(root, {"joey": 3, "ross": 2})
    tags = pd.read_parquet(out / "identities" / "tags.parquet").sort_values("clip_id", ignore_index=True)
    two_shot = tags.clip_id[0]
    rows = tags.assign(track=0, start_s=None, end_s=None)
    rows.loc[0, ["identity", "score"]] = ["joey", 0.55]
    extra = pd.DataFrame({"clip_id": [two_shot], "identity": ["ross"], "score": [0.9], "source": ["gallery"],
                          "track": [1], "start_s": [None], "end_s": [None]})
    write_identities(out, "tags", pd.concat([rows, extra], ignore_index=True).astype({"track": "Int32"}))
    return out, db, two_shot


def people_in(out, clip_id: str) -> list[str]:
    """Who the timeline shows in the clip."""
    from vidpipe.identities import timeline

    return sorted(p.identity for t in timeline(out) for p in t.people for a in p.appearances if clip_id in a.clip_ids)


@pytest.mark.parametrize("verdict", ["accept", "reject", "assign", "noise"])
def test_a_decision_on_one_person_keeps_the_other(tmp_path, verdict):
    """Accepting 'Is this joey?' on a joey + ross two-shot removed ross from the timeline
    (a review row overruled the whole clip); each person is now an item of their own."""
    from vidpipe.review.server import ReviewApp

    out, db, two_shot = library_store(tmp_path)
    assert people_in(out, two_shot) == ["joey", "ross"]
    app = ReviewApp(out, db, tmp_path / "review.db")
    try:
        first = app.next_clip(1, "tab", "r", None, None)
        clip = first["clip"]
        assert (clip["clip_id"], clip["subject"], clip["proposed"]) == (two_shot, "joey", "joey")
        assert [p["identity"] for p in clip["people"]] == ["ross", "joey"] and first["remaining"] == 6  # 5 clips, 6 people
        app.decide({"tab": "tab", "pass": 1, "clip_id": two_shot, "subject": "joey", "verdict": verdict,
                    "reviewer": "r", "identity": "chandler"})
        app.publisher.flush()
        expected = {"accept": ["joey", "ross"], "reject": ["ross"], "assign": ["chandler", "ross"], "noise": ["ross"]}
        assert people_in(out, two_shot) == expected[verdict]
        queue = app.view.queue(1, app.db.decisions(), "r")
        assert (two_shot, "ross") in queue and (two_shot, "joey") not in queue  # ross is still asked about
    finally:
        app.close()


def test_the_page_asks_about_every_person_of_a_two_shot(browser, serve, tmp_path):  # noqa: F811
    from vidpipe.identities import read_identities

    out, db, two_shot = library_store(tmp_path / "s")
    server = serve(out, db)
    page = open_page(browser, server.url)
    assert page.evaluate("[document.body.dataset.clip, document.body.dataset.subject]") == [two_shot, "joey"]
    assert page.inner_text("#proposed") == "joey"
    people = page.eval_on_selector_all("#people li", "ls => ls.map(l => l.dataset.person)")
    assert sorted(people) == ["joey", "ross"]
    page.keyboard.press("a")  # yes, joey; then the page asks about ross in the same clip
    page.wait_for_function("document.body.dataset.subject === 'ross'")
    assert page.evaluate("document.body.dataset.clip") == two_shot
    assert page.eval_on_selector("#people li[data-person='joey']", "l => l.dataset.label") == "joey"
    page.keyboard.press("r")  # no, not ross
    page.wait_for_function(f"document.body.dataset.clip !== '{two_shot}'")
    close(page)
    with ReviewDB(tmp_path / "review.db") as review:
        assert {(d.subject, d.verdict) for d in review.decisions(1) if d.clip_id == two_shot} == {
            ("joey", "accept"), ("ross", "reject")}
    server.app.publisher.flush()
    page_rows = read_identities(out)
    assert people_in(out, two_shot) == ["joey"] and len(page_rows[page_rows.source == "review"]) == 2
