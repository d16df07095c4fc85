"""`vidpipe review` and `vidpipe export`: thin shells over `vidpipe.serve_review` and
`vidpipe.export_dataset`. Errors are one line on stderr: exit 1 for bad input, 2 for bad usage."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from vidpipe.cli import one_line_errors, setup_logging

_db = click.option("--db", required=True, type=click.Path(dir_okay=False, path_type=Path),
                   help="The gallery (SQLite, from `vidpipe enroll`); decisions live beside it in NAME.review.db.")
_review_db = click.option("--review-db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                          help="Keep the decisions in this file instead.  [default: beside the gallery]")
_store = click.Path(file_okay=False, exists=True, path_type=Path)


@click.command("review")
@click.argument("out", type=_store)
@_db
@_review_db
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--token", default=None, envvar="VIDPIPE_REVIEW_TOKEN",
              help="Access token (16+ characters; also $VIDPIPE_REVIEW_TOKEN).  [default: derived from the review file]")
@one_line_errors
def review_cmd(out, db, review_db, port, host, token) -> None:
    """Serve the review page for store OUT: accept, reject, reassign or mark as noise, clip by clip.

    \b
    Keys: A accept, R reject, S assign another person (type-ahead), N noise.
    Pass 2 is a blind second review by another reviewer, pass 3 settles disagreements.
    Every decision is written at once to the review file and to OUT/identities/review.parquet.
    """
    from vidpipe.review import serve_review

    setup_logging("warning")

    def ready(server) -> None:
        click.echo(f"vidpipe review: {len(server.app.view.clips)} clips of {out}; decisions in {server.app.db.path}")
        click.echo(f"open {server.url}   (Ctrl+C to stop)")

    serve_review(out, db, host, port, token, review_db, on_ready=ready)


@click.command("export")
@click.argument("out", type=_store)
@_db
@_review_db
@click.option("--format", "fmt", type=click.Choice(["iqiyi", "parquet"]), default="iqiyi", show_default=True)
@click.option("--out", "dest", required=True, type=click.Path(path_type=Path), help="The dataset folder to write.")
@click.option("--min-score", type=float, default=0.6, show_default=True,
              help="Unreviewed clips enter only with a proposal scoring at least this.")
@click.option("--reviewed-only", is_flag=True, help="Only clips a reviewer decided.")
@click.option("--min-passes", type=click.IntRange(1, 2), default=1, show_default=True,
              help="2: a reviewed clip needs two agreeing reviews (or the arbiter's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@click.option("--no-unknown-distractors", is_flag=True,
              help="Distractors only from clips reviewers marked as noise, not from unknown-people clusters.")
@click.option("--overwrite", is_flag=True, help="Replace DATASET when it exists.")
@one_line_errors
def export_cmd(out, db, review_db, fmt, dest, min_score, reviewed_only, min_passes, seed, no_unknown_distractors,
               overwrite) -> None:
    """Write the reviewed clips of store OUT as a dataset: iQIYI-VID-2019 files or Parquet.

    \b
    Train/val/test 40/30/30, stratified by identity; distractors (unknown people) in val and
    test only. DATASET/report.html describes it, and a summary is printed here.
    """
    from vidpipe.export import ExportOptions, export_dataset
    from vidpipe.export.report import summary

    setup_logging("warning")
    options = ExportOptions(fmt=fmt, min_score=None if reviewed_only else min_score, min_passes=min_passes, seed=seed,
                            unknown_distractors=not no_unknown_distractors, overwrite=overwrite)
    result = export_dataset(out, db, dest, options, review_db=review_db)
    click.echo(summary(result.dataset, width=min(100, os.get_terminal_size(0).columns if sys.stdout.isatty() else 100)))
    click.echo(f"{fmt} dataset written to {result.path} (report: {result.path / 'report.html'})")


COMMANDS = (review_cmd, export_cmd)
