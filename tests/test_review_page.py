"""The review page in a real headless Chromium (Debian's `chromium`, driven by Python
Playwright), on a real store made from the shared photos and the Hamilton clip: the clip
plays, the three references show, the keyboard decides and the next clip comes, a reload
and a server restart keep every decision; then the whole route a dataset builder takes
(enrol, run, tag, review through the page, export). One browser for the module.

Set-up installs what is missing: `pip install playwright` into this interpreter and
`apt-get install chromium` (as root or through sudo -n); it skips only when that fails.
The screenshot is kept under pytest's temporary folder (its path is printed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import review_store
from vidpipe.cli import main
from vidpipe.eval import iqiyi_io
from vidpipe.identities import read_identities
from vidpipe.review import ReviewDB, close_server, make_server, review_db_path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def _install() -> str | None:
    """Why the browser cannot run here, or None once Playwright and Chromium are installed."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], capture_output=True, text=True)
        if pip.returncode != 0:
            return f"cannot pip install playwright: {pip.stderr.strip().splitlines()[-1:]}"
    if not os.access(CHROMIUM, os.X_OK):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        if sudo and shutil.which("sudo") is None:
            return "chromium is not installed and installing it needs root (apt-get install chromium)"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run([*sudo, *cmd], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                return f"cannot install chromium ({' '.join(cmd)}): {done.stderr.strip()[-200:]}"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _install()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def store(shared, tmp_path_factory):
    return review_store.build(shared, tmp_path_factory.mktemp("page"))


class Served:
    """A review server that can be stopped and started again on the same port."""

    def __init__(self, out: Path, db: Path) -> None:
        self.out, self.db, self.server = out, db, None

    def start(self, port: int = 0):
        self.server = make_server(self.out, self.db, port=port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server

    def restart(self):
        port = self.server.port
        self.stop()
        return self.start(port)

    def stop(self) -> None:
        if self.server is not None:
            close_server(self.server)
            self.server = None


@pytest.fixture(scope="module")
def served(store):
    s = Served(*store)
    s.start()
    yield s
    s.stop()


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)  # evaluate() needs eval
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.clip !== undefined && document.body.dataset.clip !== ''")
    return page


def close(page) -> None:
    """Close the tab as a person does (its clip is handed back), then its context."""
    page.close(run_before_unload=True)
    page.context.close()


def playing(page, selector: str) -> bool:
    """The video's currentTime advances inside its range."""
    page.wait_for_function(f"document.querySelector('{selector}').readyState >= 2", timeout=15000)
    t0 = page.evaluate(f"document.querySelector('{selector}').currentTime")
    page.wait_for_timeout(600)
    t1 = page.evaluate(f"document.querySelector('{selector}').currentTime")
    return t1 != t0


def latest_decision(page) -> tuple[str, str]:
    """(clip, verdict) at the top of the page's list of recent decisions, once it shows one."""
    page.wait_for_function("document.querySelector('#recent li') !== null")
    return tuple(page.eval_on_selector("#recent li", "e => [e.dataset.clip, e.dataset.verdict]"))


def test_review_page_plays_decides_and_keeps_decisions(browser, store, served, tmp_path_factory):
    out, db = store
    page = open_page(browser, served.server.url)
    first = page.evaluate("document.body.dataset.clip")
    proposed = page.inner_text("#proposed")
    assert proposed in review_store.PEOPLE  # the least confident named proposal comes first
    assert playing(page, "#clip")
    start, end = page.evaluate("[current.t0, current.t1]")
    assert start <= page.evaluate("document.getElementById('clip').currentTime") <= end + 0.3
    refs = page.eval_on_selector_all("video.reference", "vs => vs.map(v => v.dataset.clip)")
    assert len(refs) == 3 and first not in refs
    tags = read_identities(out).set_index("clip_id")
    assert all(tags.identity[r] == proposed for r in refs)
    assert playing(page, "video.reference")
    page.wait_for_timeout(1000 * (end - start) + 800)  # past the clip's end: it loops, never shows the next shot
    for selector in ("#clip", "video.reference"):
        shown = page.eval_on_selector(selector, "v => [Number(v.dataset.shownUntil), v.dataset.t1 || null]")
        assert shown[0] > 0, selector
    assert start <= page.eval_on_selector("#clip", "v => Number(v.dataset.shownUntil)") < end
    page.wait_for_function("[...document.querySelectorAll('#crops img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.eval_on_selector_all("#crops img", "is => is.length") >= 1
    shot = tmp_path_factory.getbasetemp() / "review_page.png"
    page.screenshot(path=str(shot))
    print(f"\nreview page screenshot: {shot}")

    page.keyboard.press("a")  # accept with the keyboard: the next clip comes at once
    page.wait_for_function(f"document.body.dataset.clip !== '{first}'")
    second = page.evaluate("document.body.dataset.clip")
    page.wait_for_function(f"document.querySelector('#recent li')?.dataset.clip === '{first}'")
    assert second and latest_decision(page) == (first, "accept")
    with ReviewDB(review_db_path(db)) as review:
        assert review.decision(first, 1).label == proposed

    page.reload()  # the decision is kept, and this tab gets its clip back
    page.wait_for_function(f"document.body.dataset.clip === '{second}'")
    assert latest_decision(page) == (first, "accept")

    served.restart()  # a server restart keeps it too (the page's tokens still work)
    page.reload()
    page.wait_for_function(f"document.body.dataset.clip === '{second}'")
    assert latest_decision(page) == (first, "accept")
    rows = read_identities(out)
    assert rows[rows.source == "review"][["clip_id", "identity"]].values.tolist() == [[first, proposed]]
    close(page)


def test_two_tabs_never_get_the_same_clip(browser, served):
    one, two = open_page(browser, served.server.url), open_page(browser, served.server.url)
    assert one.evaluate("document.body.dataset.clip") != two.evaluate("document.body.dataset.clip")
    close(one)
    close(two)


def test_the_whole_route_enrol_run_tag_review_export(browser, store, served, tmp_path):
    """The store was enrolled, run and tagged by the fixture; here a reviewer goes through
    the whole queue in the page: accepts the celebrities, assigns the slide nobody was
    recognised on (type-ahead), marks the Hamilton shots as noise. Then the export."""
    out, db = store
    page = open_page(browser, served.server.url)
    tags = read_identities(out).set_index("clip_id")
    slides = review_store.slide_people(out)
    decided: dict[str, str] = {}
    while page.evaluate("document.body.dataset.clip"):
        clip = page.evaluate("document.body.dataset.clip")
        if clip in slides and tags.identity[clip] == "unknown":
            page.keyboard.press("s")
            page.keyboard.type(slides[clip])
            page.keyboard.press("Enter")
            decided[clip] = slides[clip]
        elif clip in slides:
            page.keyboard.press("a")
            decided[clip] = tags.identity[clip]
        else:
            page.keyboard.press("n")
            decided[clip] = "0"
        page.wait_for_function(f"document.body.dataset.clip !== '{clip}'")
    close(page)
    with ReviewDB(review_db_path(db)) as review:
        labels = {d.clip_id: d.label for d in review.decisions(1)}
    assert {c: labels[c] for c in decided} == decided and len(labels) == len(slides) + 2  # 15 slides, 2 Hamilton shots
    assert {c: labels[c] for c in slides} == slides  # the page's decisions are the people really shown

    result = CliRunner().invoke(main, ["export", str(out), "--db", str(db), "--out", str(tmp_path / "dataset"),
                                       "--reviewed-only", "--seed", "1"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "dataset"
    clips = pd.read_csv(root / "clips.csv").set_index("name")
    train = iqiyi_io.read_train_gt(root / "train_gt.txt")
    ids = pd.read_csv(root / "identities.csv").set_index("identity_id").identity
    assert {n: ids[int(i)] for n, i in train.items()} == {n: labels[clips.clip_id[n]] for n in train}
    per = clips[clips.identity != "0"].groupby("identity").split.value_counts().unstack(fill_value=0)
    assert (per[["train", "val", "test"]] >= 1).all().all()  # five slides each: in every split
    assert sorted(clips.split[clips.identity == "0"]) == ["test", "val"]  # Hamilton: distractors
    faces = iqiyi_io.read_modality_pickle(root / "face_train_v2.pickle", "face")
    assert set(faces) == set(train) and all(len(v.feats) for v in faces.values())
    assert "Lin" not in (root / "report.html").read_text() and "ben_afflek" in result.output
