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
