"""`vidpipe run`: videos in, feature store out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from vidpipe.cli import setup_logging
from vidpipe.config import Config, ConfigError, parse_value
from vidpipe.util import collector_paused

# The few common flags, as config keys; everything else goes through --set.
FLAGS = {
    "device": "run.device",
    "workers": "run.workers",
    "executor": "run.executor",
    "address": "run.address",
    "weights_dir": "run.weights_dir",
    "shot_detector": "shots.detector",
    "sample_fps": "sampling.fps",
    "min_clip": "clips.min_duration_s",
    "max_clip": "clips.max_duration_s",
}
# --face-backend: one word for the detector + embedder pair.
FACE_PRESETS = {"auto": ("auto", "auto"), "scrfd": ("scrfd", "arcface"), "dlib": ("dlib", "dlib")}


def build_config(config_file: Path | None, settings: tuple[str, ...], flags: dict) -> Config:
    """Config file, then --set, then the flags; one-line ConfigError on anything wrong
    (a weights directory that is not there included)."""
    from vidpipe.weights import WeightsError, check_named_dirs

    cfg = Config.load(config_file) if config_file else Config()
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set wants section.key=value, not {item!r}")
        cfg.set(key.strip(), parse_value(value.strip()))
    for name, key in FLAGS.items():
        if flags.get(name) is not None:
            cfg.set(key, str(flags[name]) if name == "weights_dir" else flags[name])
    if flags.get("face_backend"):
        detector, embedder = FACE_PRESETS[flags["face_backend"]]
        cfg.set("faces.detector", detector)
        cfg.set("faces.embedder", embedder)
    if flags.get("all_people"):
        cfg.set("clips.require_major_character", False)
    try:
        check_named_dirs(cfg.run.weights_dir, _weights_origin(config_file, settings, flags))
    except WeightsError as e:
        raise ConfigError(str(e)) from None
    return cfg.validate()


def _weights_origin(config_file: Path | None, settings: tuple[str, ...], flags: dict) -> str:
    """Which of the three places set run.weights_dir last (for the message)."""
    if flags.get("weights_dir") is not None:
        return "--weights"
    if any(item.partition("=")[0].strip() == "run.weights_dir" for item in settings):
        return "--set run.weights_dir"
    return f"run.weights_dir in {config_file}"


class _Bars:
    """A bar over videos, and one over the seconds of the video being decoded."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.videos = tqdm(total=total, desc="videos", unit="video", disable=not enabled or None, dynamic_ncols=True)
        self.current: tqdm | None = None
        self.current_path: Path | None = None
        self.kept = 0
        self.rows: dict[str, int] = {}
        self.failed = 0

    def progress(self, path: Path, done: float, total: float) -> None:
        if not self.enabled:
            return
        if self.current_path != path:
            self._close_current()
            self.current_path = path
            self.current = tqdm(total=total or None, desc=path.name[:30], unit="s", leave=False, dynamic_ncols=True,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s video [{elapsed}]")
        self.current.update(max(0.0, done - self.current.n))  # tqdm limits redraws itself

    def result(self, outcome) -> None:
        self._close_current()
        self.videos.update(1)
        self.kept += outcome.n_clips_kept
        for table, n in outcome.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n
        self.failed += outcome.status == "error"
        self.videos.set_postfix(clips=self.kept, faces=self.rows.get("faces", 0), errors=self.failed, refresh=False)

    def _close_current(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current, self.current_path = None, None

    def close(self) -> None:
        self._close_current()
        self.videos.close()


@click.command("run")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Feature store directory (created; an existing one is resumed).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML or YAML file, one section per stage ([sampling] [shots] [clips] [faces] …); "
                   "--set and the flags override it.")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Set any config value, e.g. --set faces.top_k=16 --set clips.require_major_character=false "
                   "(repeatable; `vidpipe backends` lists stages and backends).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where models run. auto: CUDA when available.  [default: auto]")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Videos processed in parallel (one process each; the cores are split between them).  [default: 1]")
@click.option("--executor", type=click.Choice(["processes", "serial", "ray"]), default=None,
              help="How workers run: local processes, this process, or a Ray cluster (pip install "
                   "'vidpipe[ray]'; --workers is then per machine).  [default: processes]")
@click.option("--address", default=None, metavar="ADDR",
              help="With --executor ray: the cluster to join (e.g. ray://head:10001, or auto for the one "
                   "`ray start` made here); without it, a private Ray instance is started on this machine.")
@click.option("--weights", "weights_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory with model files, searched before $VIDPIPE_WEIGHTS, ./weights and the user cache.")
@click.option("--face-backend", type=click.Choice(list(FACE_PRESETS)), default=None,
              help="scrfd: SCRFD + ArcFace-style ONNX models; dlib: weights from PyPI; "
                   "auto: scrfd when its weights are found, else dlib.  [default: auto]")
@click.option("--all-people", is_flag=True,
              help="Library tagging: keep clips of any number of people (turns off the one-major-character rule).")
@click.option("--shot-detector", type=click.Choice(["adaptive", "content"]), default=None,
              help="PySceneDetect detector for shot boundaries.  [default: adaptive]")
@click.option("--sample-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frames per second analysed inside each clip.  [default: 4]")
@click.option("--min-clip", type=click.FloatRange(min=0), default=None, help="Shortest kept clip, seconds.  [default: 1]")
@click.option("--max-clip", type=click.FloatRange(min=0), default=None, help="Longest kept clip, seconds.  [default: 30]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; only warnings and errors.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="How much to log.")
def run_cmd(inputs, out, config_file, settings, quiet, log_level, **flags) -> None:
    """Process INPUTS (video files and folders, searched recursively) into the feature store OUT.

    \b
    Each video is cut into shots; shots of 1-30 s become clips; a clip is kept when one
    major character is in it (iQIYI-VID §3.2); every stage then describes kept clips.
    Writes Parquet tables OUT/videos, OUT/clips, OUT/<one per stage> (one file per video)
    and OUT/manifest.json. Running the same command again skips finished videos, so a
    killed run resumes. Bad files are reported and recorded with status 'error'.

    \b
    Exit status: 0 every file processed, 1 some files failed, 2 bad usage, config or weights.
    """
    # No OpenBLAS threads in a run, here or in its workers, from before NumPy loads (the
    # stages' config sections import it): its calls are tiny, and its idle threads spin on
    # the decoder's and ONNX Runtime's cores (0.2 s of CPU after loading alone).
    # `vidpipe.api` limits them too, for the API. A user's own setting is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    setup_logging("warning" if quiet and log_level == "info" else log_level)
    from vidpipe.registry import BackendError
    from vidpipe.weights import WeightsError

    try:
        with collector_paused():  # the stages' modules are imported for their config sections
            cfg = build_config(config_file, settings, flags)
            cfg.stage_names()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None

    with collector_paused():
        from vidpipe.api import discover, run  # heavy imports only when running

    bars = _Bars(sum(map(len, discover(inputs, cfg.run.extensions))), enabled=not quiet)
    try:
        report = run(inputs, out, cfg, on_result=bars.result, on_progress=bars.progress)
    except (WeightsError, BackendError, ConfigError) as e:
        bars.close()
        click.echo(f"vidpipe: error: {e}", err=True)
        sys.exit(2)
    bars.close()
    rows = ", ".join(f"{n} {table}" for table, n in sorted(bars.rows.items()) if table != "clips")
    click.echo(
        f"{report.count('ok')} processed, {report.count('skipped')} already done, {len(report.failed)} failed; "
        f"{sum(o.n_clips_kept for o in report.outcomes)} clips kept{'; ' + rows if rows else ''} -> {out}",
        err=True,
    )
    sys.exit(report.exit_code)
