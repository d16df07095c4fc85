"""`vidpipe`: one command, sub-commands per job. A thin shell over the Python API."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from tqdm import tqdm

from vidpipe import __version__
from vidpipe.config import Config, ConfigError

log = logging.getLogger("vidpipe")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear progress bars apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never crash the run
            self.handleError(record)


def setup_logging(level: str) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("vidpipe %(levelname)s: %(message)s"))
    root = logging.getLogger("vidpipe")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("pyscenedetect").setLevel(logging.ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vidpipe")
def main() -> None:
    """vidpipe turns raw video into per-clip person identities.

    \b
    Typical use:
      vidpipe run videos/ --out features/     shots -> 1-30 s clips -> faces -> feature store
      vidpipe weights list                    which pretrained models are found, and where
      vidpipe train --features features/ --labels labels.csv --out model/
      vidpipe predict --features features/ --model model/ --submission sub.txt
      vidpipe eval --submission sub.txt --gt val_gt.txt       mAP@100 as iQIYI-VID
    """


@main.command("run")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Feature store directory (created; an existing one is resumed).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML or YAML file with [run] [shots] [clips] [faces] sections; flags override it.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where models run. auto: CUDA when available.  [default: auto]")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Videos processed in parallel (one process each).  [default: 1]")
@click.option("--weights", "weights_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory with model files, searched before $VIDPIPE_WEIGHTS, ./weights and the user cache.")
@click.option("--face-backend", type=click.Choice(["auto", "scrfd", "dlib"]), default=None,
              help="scrfd: SCRFD + ArcFace-style ONNX models; dlib: weights from PyPI; "
                   "auto: scrfd when its weights are found, else dlib.  [default: auto]")
@click.option("--shot-detector", type=click.Choice(["adaptive", "content"]), default=None,
              help="PySceneDetect detector for shot boundaries.  [default: adaptive]")
@click.option("--sample-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frames per second analysed for faces inside each clip.  [default: 4]")
@click.option("--min-clip", type=click.FloatRange(min=0), default=None, help="Shortest kept clip, seconds.  [default: 1]")
@click.option("--max-clip", type=click.FloatRange(min=0), default=None, help="Longest kept clip, seconds.  [default: 30]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; only warnings and errors.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="How much to log.")
def run_cmd(inputs, out, config_file, device, workers, weights_dir, face_backend, shot_detector, sample_fps,
            min_clip, max_clip, quiet, log_level) -> None:
    """Process INPUTS (video files and folders, searched recursively) into the feature store OUT.

    \b
    Writes Parquet tables OUT/videos, OUT/clips, OUT/faces (one file per video) and
    OUT/manifest.json. Running the same command again skips finished videos, so a killed
    run resumes. Bad files are reported and recorded with status 'error'; the rest go on.

    \b
    Exit status: 0 every file processed, 1 some files failed, 2 bad usage, config or weights.
    """
    setup_logging("warning" if quiet and log_level == "info" else log_level)
    try:
        cfg = Config.load(config_file) if config_file else Config()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    overrides = {
        ("run", "device"): device,
        ("run", "workers"): workers,
        ("run", "weights_dir"): str(weights_dir) if weights_dir else None,
        ("faces", "backend"): face_backend,
        ("faces", "sample_fps"): sample_fps,
        ("shots", "detector"): shot_detector,
        ("clips", "min_duration_s"): min_clip,
        ("clips", "max_duration_s"): max_clip,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section), key, value)

    from vidpipe.api import run  # heavy imports only when running
    from vidpipe.weights import WeightsError

    try:
        report = run(inputs, out, cfg, progress=not quiet)
    except WeightsError as e:
        click.echo(f"vidpipe: error: {e}", err=True)
        sys.exit(2)
    ok, skipped = report.count("ok"), report.count("skipped")
    click.echo(
        f"{ok} processed, {skipped} already done, {len(report.failed)} failed; "
        f"{sum(o.n_clips_kept for o in report.outcomes)} clips kept, "
        f"{sum(o.n_faces for o in report.outcomes)} faces -> {out}",
        err=True,
    )
    sys.exit(report.exit_code)


# Light imports: the model code (torch) loads inside the commands that need it.
from vidpipe.models.cli import evaluate, predict, train  # noqa: E402
from vidpipe.weights import weights_cli  # noqa: E402

for command in (weights_cli, train, predict, evaluate):
    main.add_command(command)
