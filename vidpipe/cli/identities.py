"""`vidpipe enroll | gallery | tag | people | timeline | search`: thin shells over
`vidpipe.identities`. Errors are one line on stderr: exit 1 for bad input (empty or corrupt
gallery, store from other backends, …), 2 for bad usage, config or weights."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from vidpipe.cli import one_line_errors, setup_logging
from vidpipe.cli.run import FACE_PRESETS, build_config

_db = click.option("--db", required=True, type=click.Path(dir_okay=False, path_type=Path),
                   help="The gallery: an SQLite file (created by `vidpipe enroll`).")
_store = click.Path(file_okay=False, exists=True, path_type=Path)


def _backend_options(fn):
    for option in reversed([
        click.option("--weights", "weights_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Directory with model files (as for `vidpipe run`)."),
        click.option("--face-backend", type=click.Choice(list(FACE_PRESETS)), default=None,
                     help="Must be the one the store was made with.  [default: auto]"),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where models run."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The config file given to `vidpipe run`."),
        click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE", help="Any config value."),
    ]):
        fn = option(fn)
    return fn


def _config(config_file, settings, **flags):
    return build_config(config_file, settings, flags)


# ---------------------------------------------------------------- enroll


@click.command("enroll")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_db
@click.option("--name", default=None, help="Every photo and video in INPUTS is of this person.")
@_backend_options
@click.option("--quiet", "-q", is_flag=True, help="Only the summary and problems.")
@one_line_errors
def enroll_cmd(inputs, db, name, config_file, settings, quiet, **flags) -> None:
    """Enrol people from GALLERY_DIR (one sub-folder per person, photos and/or video clips).

    \b
    Every usable face is embedded with the same face backend as `vidpipe run`. Photos with
    no face, or with several people of similar size, are listed and not used. Running it
    again only looks at new or changed files; files removed from the folder leave the gallery.
    """
    from tqdm import tqdm

    from vidpipe.identities import enroll

    setup_logging("warning")
    cfg = _config(config_file, settings, **flags)
    bar = tqdm(total=0, desc="files", unit="file", disable=quiet or None, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = enroll(inputs, db, cfg, name=name, on_progress=progress)
    finally:
        bar.close()
    for p in report.problems:
        click.echo(f"not used: {p.path}: {p.reason}", err=True)
    click.echo(f"{len(report.added)} file(s) enrolled ({report.faces_added} faces), {report.unchanged} unchanged, "
               f"{len(report.removed)} removed, {len(report.problems)} not used; {report.people} people in {db}")


# ---------------------------------------------------------------- gallery


@click.group("gallery")
def gallery_cli() -> None:
    """List, remove, rename and calibrate the people of a gallery."""


@gallery_cli.command("list")
@_db
@click.option("--files", is_flag=True, help="Also list every file and whether it was used.")
@one_line_errors
def gallery_list(db, files) -> None:
    """The people of the gallery, with their faces and files."""
    from vidpipe.identities import Gallery

    with Gallery.open(db) as gallery:
        people, sources, fingerprint = gallery.people(), gallery.sources() if files else [], gallery.fingerprint
    click.echo(f"{db}: {len(people)} people; backends: {fingerprint.describe() if fingerprint else 'none yet'}")
    click.echo(f"{'name':<32} {'faces':>6} {'files':>6} {'not used':>9}")
    for p in people:
        click.echo(f"{p.name:<32} {p.n_faces:>6} {p.n_sources:>6} {p.n_unusable:>9}")
    for s in sources:
        status = "ok" if s.status == "ok" else f"{s.status}: {s.detail}"
        click.echo(f"  {s.person:<30} {s.kind:<7} {s.path}  [{status}]")


@gallery_cli.command("remove")
@click.argument("name")
@_db
@one_line_errors
def gallery_remove(name, db) -> None:
    """Remove person NAME and all their faces."""
    from vidpipe.identities import Gallery

    with Gallery.open(db) as gallery:
        gallery.remove(name)
    click.echo(f"removed {name} from {db}")


@gallery_cli.command("rename")
@click.argument("old")
@click.argument("new")
@_db
@one_line_errors
def gallery_rename(old, new, db) -> None:
    """Rename person OLD to NEW (merged into NEW when NEW exists)."""
    from vidpipe.identities import Gallery

    with Gallery.open(db) as gallery:
        gallery.rename(old, new)
    click.echo(f"renamed {old} to {new} in {db}")


@gallery_cli.command("calibrate")
@_db
@click.option("--target-fpir", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Largest share of strangers that may be named.")
@click.option("--save", is_flag=True, help="Use the result for this gallery from now on.")
@one_line_errors
def gallery_calibrate(db, target_fpir, save) -> None:
    """Leave-one-out threshold and margin on the gallery's own faces.

    \b
    Leave-one-out needs a person with two faces or more. When every person has one face,
    the embedder's default is kept and its FPIR on the gallery's faces is printed: for
    MobileFaceNet (the default embedder) threshold 0.339, margin 0.146, calibrated on the
    shared photos (16 people); with one reference photo per person it names the right
    person for 89 % of their other photos and 0.6 % of strangers."""
    from vidpipe.identities import Gallery, calibrate
    from vidpipe.identities.calibration import DEFAULTS

    with Gallery.open(db) as gallery:
        embeddings, names = gallery.face_embeddings()
        fingerprint = gallery.fingerprint
        default = DEFAULTS.get(fingerprint.embedder_key) if fingerprint is not None else None
        result = calibrate(embeddings, names, target_fpir, default)
        if save:
            gallery.save_calibration(result.thresholds.threshold, result.thresholds.margin)
    click.echo(result.summary() + ("; saved" if save else ""))


# ---------------------------------------------------------------- tag


@click.command("tag")
@click.argument("out", type=_store)
@_db
@click.option("--threshold", type=float, default=None, help="Minimum cosine to a person.  [default: calibrated]")
@click.option("--margin", type=float, default=None, help="Minimum lead over the runner-up.  [default: calibrated]")
@click.option("--min-cluster-size", type=click.IntRange(min=2), default=3, show_default=True,
              help="Fewest clips that make a group of unknown faces a person (a clear close-up alone is one too).")
@click.option("--body-distance", type=click.FloatRange(0, 2), default=0.3, show_default=True,
              help="Clothes clusters: cosine distance under which clips join (propagation).")
@click.option("--voice-distance", type=click.FloatRange(0, 2), default=0.25, show_default=True,
              help="Voice clusters: cosine distance under which clips join (propagation).")
@one_line_errors
def tag_cmd(out, db, threshold, margin, min_cluster_size, body_distance, voice_distance) -> None:
    """Tag every kept clip of store OUT with the gallery's people.

    \b
    Writes OUT/identities/tags.parquet (clip_id, identity, score, source, track, start_s, end_s),
    OUT/unknown/ (unknown people), OUT/timeline.json and OUT/timeline.csv. Tagging again
    only does what new videos or gallery changes can change.
    """
    from vidpipe.identities import TagOptions, tag
    from vidpipe.identities.cluster import ClusterOptions
    from vidpipe.identities.propagate import PropagationOptions

    options = TagOptions(threshold, margin, propagation=PropagationOptions(body_distance, voice_distance),
                         clustering=ClusterOptions(min_cluster_size=min_cluster_size))
    r = tag(out, db, options)
    for note in r.notes:
        click.echo(note, err=True)
    click.echo(f"{r.clips} clips ({r.mode} mode, threshold {r.thresholds.threshold:.3f}, margin {r.thresholds.margin:.3f}): "
               f"{r.named} named by face, {r.propagated} by clothes or voice, {r.unknown} unknown; {r.clusters} unknown people; "
               f"{r.rescored} of {r.tracks} face tracks matched now, {r.changed} clips changed -> {out / 'identities'}")


# ---------------------------------------------------------------- people


@click.group("people")
def people_cli() -> None:
    """Unknown people of a tagged store: list them, name them."""


_out = click.option("--out", "-o", "out", required=True, type=_store, help="The tagged feature store.")


@people_cli.command("unknown")
@_out
@one_line_errors
def people_unknown(out) -> None:
    """Clusters of faces nobody enrolled, most clips first, with a face crop each."""
    from vidpipe.identities import unknown_people

    people = unknown_people(out)
    if not people:
        click.echo("no unknown people (tag the store first, or everyone is known)")
    click.echo(f"{'cluster':>7} {'clips':>6} {'videos':>6}  crop")
    for p in people:
        click.echo(f"{p.cluster_id:>7} {p.n_clips:>6} {p.n_videos:>6}  {p.crop or '-'}")


@people_cli.command("name")
@click.argument("cluster", type=int)
@click.argument("name")
@_out
@_db
@one_line_errors
def people_name(cluster, name, out, db) -> None:
    """Enrol unknown person CLUSTER as NAME and tag the store again.

    A cluster whose faces are of several people is refused (exit 2)."""
    from vidpipe.identities import name_cluster
    from vidpipe.identities.people import MixedClusterError

    try:
        r = name_cluster(out, db, cluster, name)
    except MixedClusterError as e:
        click.echo(f"vidpipe: error: {e}", err=True)
        sys.exit(2)
    click.echo(f"enrolled cluster {cluster} as {name}; {r.changed} clips changed, {r.named} named by face, "
               f"{r.clusters} unknown people left")


# ---------------------------------------------------------------- timeline and search


@click.command("timeline")
@click.argument("out", type=_store)
@click.argument("video", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@one_line_errors
def timeline_cmd(out, video, fmt) -> None:
    """Who is seen when, per video of store OUT (or only VIDEO: its id, path or file name).

    Also rewrites OUT/timeline.json and OUT/timeline.csv (whole store) from every route
    in OUT/identities/."""
    from vidpipe.identities.timeline import format_timeline, timeline, to_csv, to_json, write_timeline

    result = timeline(out, video)
    if video is None:
        write_timeline(out, result)
    click.echo({"text": format_timeline, "json": to_json, "csv": to_csv}[fmt](result).rstrip("\n"))


@click.command("search")
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=_store)
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Most clips listed.")
@click.option("--threshold", type=float, default=None, help="Minimum cosine.  [default: calibrated]")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.option("--weights", "weights_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory with model files (as for `vidpipe run`).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where models run.")
@one_line_errors
def search_cmd(photo, out, top, threshold, as_json, weights_dir, device) -> None:
    """The clips of store OUT where the face in PHOTO appears, best first, with times."""
    from vidpipe.identities import search

    setup_logging("warning")
    cfg = _config(None, (), weights_dir=weights_dir, device=device)
    result = search(photo, out, cfg, threshold=threshold, top=top)
    if as_json:
        click.echo(json.dumps([asdict(h) for h in result.hits], indent=2))
        return
    click.echo(f"{len(result.hits)} clip(s) of {out} with cosine >= {result.threshold:.3f} "
               f"({result.faces_searched} faces searched in {result.seconds_search * 1000:.0f} ms)")
    for rank, h in enumerate(result.hits, 1):
        click.echo(f"{rank:>3}. {h.score:.3f}  {Path(h.path).name}  clip {h.clip_start_s:.2f}-{h.clip_end_s:.2f} s  "
                   f"face seen {h.first_s:.2f}-{h.last_s:.2f} s (best at {h.best_time_s:.2f} s)  {h.clip_id}")


COMMANDS = (enroll_cmd, gallery_cli, tag_cmd, people_cli, timeline_cmd, search_cmd)
