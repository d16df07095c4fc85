"""What a dataset holds, for people: `report.html` (one self-contained file: styles and face
thumbnails inline, so it opens offline and travels with the dataset) and a one-page summary
for the terminal. Per identity: clips, total duration, face thumbnails, clips per split,
how the labels were obtained and how far the two reviews agreed."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import pandas as pd

from vidpipe.export.dataset import SPLITS, Dataset
from vidpipe.identities.table import NOISE
from vidpipe.review.agreement import OVERALL
from vidpipe.review.media import MediaGone, face_jpeg
from vidpipe.review.queue import StoreView

log = logging.getLogger("vidpipe.export")
THUMBNAILS = 4
DISTRACTORS = "distractors (unknown people)"
STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}th{background:#eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}img{height:64px;margin-right:3px;border:1px solid #999}
.small{color:#666;font-size:.9em}"""


def per_identity(data: Dataset) -> pd.DataFrame:
    """One row per identity (distractors last): clips, seconds, clips per split, reviewed clips."""
    clips = data.clips.assign(who=data.clips.identity.where(data.clips.identity != NOISE, DISTRACTORS),
                              reviewed=data.clips.label_source == "review")
    table = clips.groupby("who").agg(clips=("clip_id", "size"), seconds=("duration_s", "sum"),
                                     reviewed=("reviewed", "sum"))
    counts = clips.pivot_table(index="who", columns="split", values="clip_id", aggfunc="size", fill_value=0)
    table = table.join(counts.reindex(columns=list(SPLITS), fill_value=0))
    agreement = {a.identity: a for a in data.agreement}
    table["agreement"] = [agreement[w].rate if w in agreement else None for w in table.index]
    table["kappa"] = [agreement[w].kappa if w in agreement else None for w in table.index]
    order = sorted(table.index, key=lambda w: (w == DISTRACTORS, -table.clips[w], w))
    return table.loc[order]


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.0f} %"


def _num(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.2f}"


def thumbnails(data: Dataset, view: StoreView, n: int = THUMBNAILS) -> dict[str, list[bytes]]:
    """Up to n face crops per identity, each from another clip, best faces first."""
    out: dict[str, list[bytes]] = {}
    for clip_id, identity in zip(data.clips.clip_id, data.clips.identity):
        who = DISTRACTORS if identity == NOISE else identity
        mine = out.setdefault(who, [])
        faces = view.faces(clip_id, 1)
        if len(mine) >= n or not faces:
            continue
        try:
            mine.append(face_jpeg(view.videos[view.clips[clip_id].video_id], faces[0], side=128))
        except MediaGone as e:
            log.warning("no thumbnail for %s: %s", clip_id, e)
    return out


def write_report(data: Dataset, view: StoreView, path: str | Path) -> Path:
    table = per_identity(data)
    thumbs = thumbnails(data, view)
    split_totals = data.clips.split.value_counts()
    overall = next((a for a in data.agreement if a.identity == OVERALL), None)
    rows = []
    for who, r in table.iterrows():
        images = "".join(f'<img alt="face" src="data:image/jpeg;base64,{base64.b64encode(j).decode()}">'
                         for j in thumbs.get(who, []))
        rows.append(f"<tr><td>{html.escape(who)}</td><td class=n>{r.clips}</td><td class=n>{r.seconds:.1f}</td>"
                    + "".join(f"<td class=n>{r[s]}</td>" for s in SPLITS)
                    + f"<td class=n>{int(r.reviewed)}</td><td class=n>{_pct(r.agreement)}</td>"
                    f"<td class=n>{_num(r.kappa)}</td><td>{images}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("identity", "clips", "seconds", *SPLITS, "reviewed", "agreement",
                                             "kappa", "faces"))
    options = ", ".join(f"{k}={v}" for k, v in data.options.items())
    text = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vidpipe dataset</title>
<style>{STYLE}</style></head><body>
<h1>Dataset report</h1>
<p>{len(data.clips)} clips ({data.clips.duration_s.sum():.1f} s) of {len(data.identities)} identities and
{int((data.clips.identity == NOISE).sum())} distractors; train {split_totals.get("train", 0)},
val {split_totals.get("val", 0)}, test {split_totals.get("test", 0)}.
{int((data.clips.label_source == "review").sum())} clips labelled by reviewers, the rest by their automatic proposal.
Two-review agreement: {_pct(overall.rate if overall else None)} (Cohen's kappa {_num(overall.kappa if overall else None)},
{overall.clips if overall else 0} clips reviewed twice).</p>
<p class=small>Store {html.escape(data.store)}; {html.escape(options)}</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    Path(path).write_text(text, encoding="utf-8")  # inside the export's hidden folder: renamed with it
    return Path(path)


def summary(data: Dataset, width: int = 100, max_rows: int = 30) -> str:
    """A page for the terminal: totals, then the identities with most clips."""
    table = per_identity(data)
    split_totals = data.clips.split.value_counts()
    overall = next((a for a in data.agreement if a.identity == OVERALL), None)
    lines = [
        f"{len(data.clips)} clips, {data.clips.duration_s.sum():.1f} s: {len(data.identities)} identities, "
        f"{int((data.clips.identity == NOISE).sum())} distractors",
        "splits: " + ", ".join(f"{s} {split_totals.get(s, 0)}" for s in SPLITS)
        + f"; labelled by review {int((data.clips.label_source == 'review').sum())}, automatically "
        f"{int((data.clips.label_source != 'review').sum())}",
        f"two-review agreement {_pct(overall.rate if overall else None)}, kappa {_num(overall.kappa if overall else None)}",
        "",
    ]
    name_w = max(10, min(width - 60, max((len(w) for w in table.index), default=10)))
    lines.append(f"{'identity':<{name_w}} {'clips':>6} {'seconds':>8} {'train':>6} {'val':>5} {'test':>5} "
                 f"{'agree':>6} {'kappa':>6}")
    shown = table.head(max_rows) if len(table) <= max_rows + 1 else table.head(max_rows - 1)
    for who, r in shown.iterrows():
        lines.append(f"{who[:name_w]:<{name_w}} {r.clips:>6} {r.seconds:>8.1f} {r.train:>6} {r.val:>5} {r.test:>5} "
                     f"{_pct(r.agreement):>6} {_num(r.kappa):>6}")
    if len(shown) < len(table):
        lines.append(f"… {len(table) - len(shown)} more (see report.html)")
    return "\n".join(lines)
