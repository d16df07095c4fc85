"""`vidpipe weights list|verify|fetch`: the weights registry from the command line."""

from __future__ import annotations

from typing import Iterable

import click

from vidpipe.cli import one_line_errors
from vidpipe.weights import (
    ENV_WEIGHTS, REGISTRY, WeightsCorrupt, WeightsError, check, check_named_dirs, fetch, find, get_entry,
    list_weights,
)


def _names_or_all(names: Iterable[str]) -> list[str]:
    names = list(names)
    for n in names:
        get_entry(n)
    return names or list(REGISTRY)


@click.group("weights")
def weights_cli() -> None:
    """List, verify and fetch pretrained weights."""


_weights_opt = click.option(
    "--weights", "weights_dir", type=click.Path(file_okay=False), default=None,
    help=f"Weights directory searched first (then ${ENV_WEIGHTS}, ./weights, the user cache).",
)


@weights_cli.command("list")
@_weights_opt
@one_line_errors
def list_cmd(weights_dir: str | None) -> None:
    """Known weights, where lookup finds them, and their licence."""
    check_named_dirs(weights_dir, "--weights")
    rows = [(s.entry.name, s.entry.task, str(s.path) if s.path else "missing", s.entry.licence)
            for s in list_weights(weights_dir)]
    header = ("name", "task", "found at", "licence")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for r in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])


@weights_cli.command("verify")
@_weights_opt
@click.argument("names", nargs=-1)
@one_line_errors
def verify_cmd(weights_dir: str | None, names: tuple[str, ...]) -> None:
    """Hash every found weights file (or NAMES); exit 1 on any mismatch."""
    check_named_dirs(weights_dir, "--weights")
    try:
        chosen = _names_or_all(names)
    except WeightsError as e:
        raise click.ClickException(str(e)) from None
    bad = 0
    for name in chosen:
        entry = get_entry(name)
        path = find(name, weights_dir)
        if path is None:
            click.echo(f"{name}: missing")
            continue
        try:
            digest = check(entry, path, use_cache=False)
        except WeightsCorrupt as e:
            bad += 1
            click.echo(f"{name}: BAD  {e}")
            continue
        state = "ok" if entry.sha256 else "unpinned (no registry sha256)"
        click.echo(f"{name}: {state} {path} sha256={digest}")
    if bad:
        raise click.ClickException(f"{bad} weights file(s) failed verification")


@weights_cli.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help=f"Directory to write into (default: ${ENV_WEIGHTS}, else the user cache).")
def fetch_cmd(names: tuple[str, ...], dest: str | None) -> None:
    """Download NAME... from their upstream sources and verify them."""
    try:
        for name in _names_or_all(names):
            path = fetch(name, dest)
            click.echo(f"{name}: {path}")
    except WeightsError as e:
        raise click.ClickException(str(e)) from None
