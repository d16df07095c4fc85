"""`vidpipe`: one command, sub-commands per job. A thin shell over the Python API.

Each sub-command lives in its own module here (or, for the fusion model, in
`vidpipe.models.cli`) and is registered on `main` below. Heavy imports (torch, models)
happen inside the commands so that `vidpipe --help` stays fast.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import sys

import click
from tqdm import tqdm

from vidpipe._version import __version__

# The interpreter's last full garbage collection walks every object torch, ONNX Runtime and
# pandas made, 0.5 s of a 2.5 s start-up-only run; nothing at exit needs it (the commands
# close and rename their files themselves), so those objects are frozen out of it.
atexit.register(gc.freeze)


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear progress bars apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never crash the run
            self.handleError(record)


def one_line_errors(fn):
    """A command's expected failures as one line on stderr and an exit status instead of a
    traceback: 1 for a problem with the data (identities, review), 2 for configuration,
    weights, backends or a store file that cannot be read (any Parquet file read directly
    too: Arrow's message names it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import pyarrow as pa

        from vidpipe.config import ConfigError
        from vidpipe.identities import IdentitiesError
        from vidpipe.registry import BackendError
        from vidpipe.store import StoreError
        from vidpipe.util import first_line
        from vidpipe.weights import WeightsError

        try:
            return fn(*args, **kwargs)
        except IdentitiesError as e:
            click.echo(f"vidpipe: error: {e}", err=True)
            sys.exit(1)
        except (ConfigError, WeightsError, BackendError, StoreError) as e:
            click.echo(f"vidpipe: error: {e}", err=True)
            sys.exit(2)
        except pa.ArrowException as e:
            click.echo(f"vidpipe: error: unreadable Parquet file: {first_line(e)}", err=True)
            sys.exit(2)

    return wrapper


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
      vidpipe run videos/ --out features/     shots -> 1-30 s clips -> one major character
                                              -> faces, heads, bodies, audio -> feature store
      vidpipe config > vidpipe.toml           every setting with its default, to edit
      vidpipe backends                        which models each task can use, and the stages
      vidpipe weights list                    which pretrained models are found, and where
      vidpipe train --features features/ --labels labels.csv --out model/
      vidpipe predict --features features/ --model model/ --submission sub.txt
      vidpipe eval --submission sub.txt --gt val_gt.txt       mAP@100 as iQIYI-VID
      vidpipe review features/ --db gallery.db  then  vidpipe export features/ --db gallery.db --out dataset/
    """


def _register() -> None:
    from vidpipe.cli.backends import backends_cmd
    from vidpipe.cli.config import config_cmd
    from vidpipe.cli.identities import COMMANDS as IDENTITY_COMMANDS
    from vidpipe.cli.review import COMMANDS as REVIEW_COMMANDS
    from vidpipe.cli.run import run_cmd
    from vidpipe.cli.weights import weights_cli
    from vidpipe.models.cli import evaluate, predict, train

    for command in (run_cmd, config_cmd, backends_cmd, weights_cli, train, predict, evaluate, *IDENTITY_COMMANDS, *REVIEW_COMMANDS):
        main.add_command(command)


_register()
