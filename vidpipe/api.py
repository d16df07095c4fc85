"""The Python API: `run` a folder of videos into a feature store, `read_table` it back.

The CLI is a thin shell over this module: progress comes out through callbacks (the CLI
draws tqdm bars with them), results through a `RunReport`.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from vidpipe.config import Config
from vidpipe.executors import get_executor, threads_per_worker
from vidpipe.pipeline.runner import Pipeline, VideoOutcome, VideoProcessor
from vidpipe.store import read_table, remove_stale_temporaries

log = logging.getLogger("vidpipe")

__all__ = ["run", "read_table", "RunReport", "discover", "VideoOutcome"]


@dataclass
class RunReport:
    """What a run did, file by file."""

    out: Path
    outcomes: list[VideoOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[VideoOutcome]:
        """Files that could not be processed, now or in the earlier run that is being resumed."""
        return [o for o in self.outcomes if o.status == "error" or (o.status == "skipped" and o.error)]

    @property
    def exit_code(self) -> int:
        """0 when every file was processed, 1 when some failed."""
        return 1 if self.failed else 0

    def total_rows(self, table: str) -> int:
        return sum(o.rows.get(table, 0) for o in self.outcomes)


def discover(inputs: Iterable[str | os.PathLike[str]], extensions: Sequence[str]) -> tuple[list[Path], list[VideoOutcome]]:
    """Video files under the inputs (folders recursively, by extension; files as given),
    and the inputs that cannot be read (missing paths, dangling symbolic links)."""
    files: list[Path] = []
    problems: list[VideoOutcome] = []
    exts = {e.lower() for e in extensions}

    def dangling(p: Path) -> VideoOutcome:
        return VideoOutcome(str(p), None, "error", error=f"dangling symbolic link to {os.readlink(p)}")

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts) or f.suffix.lower() not in exts:
                    continue
                if f.is_symlink() and not f.exists():
                    problems.append(dangling(f))
                elif f.is_file():
                    files.append(f)
        elif p.is_symlink() and not p.exists():
            problems.append(dangling(p))
        elif p.exists():
            files.append(p)
        else:
            problems.append(VideoOutcome(str(p), None, "error", error="no such file or directory"))
    # Every path once; two paths to the same bytes both go through (the second is skipped
    # as done, but its path is recorded).
    return list(dict.fromkeys(f.absolute() for f in files)), problems


def _build_worker(cfg: Config, out: Path) -> Callable:
    """In a worker process: the pipeline, built once; returns worker(item, progress)."""
    logging.getLogger("vidpipe").setLevel(max(logging.getLogger("vidpipe").level, logging.WARNING))
    if cfg.run.threads > 0:
        import torch

        torch.set_num_threads(cfg.run.threads)
    processor = VideoProcessor(Pipeline.build(cfg), out)
    return lambda item, progress: processor.process(item[0], progress, wait=item[1])


def run(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: Config | None = None,
    *,
    on_result: Callable[[VideoOutcome], None] | None = None,
    on_progress: Callable[[Path, float, float], None] | None = None,
) -> RunReport:
    """Process every video under `inputs` into the feature store at `out`.

    Finished videos (same content, same analysis config and models) are skipped, so a killed
    run started again resumes. Bad files are recorded with status 'error' and a one-line
    reason; the run goes on with the rest. A video another `vidpipe run` holds is left to it
    and checked again at the end. `on_result(outcome)` is called as each file finishes,
    `on_progress(path, seconds decoded, seconds in all)` while a file is decoded in this
    process.
    """
    cfg = copy.deepcopy(config or Config())
    cfg.run.threads = threads_per_worker(cfg.run.workers, cfg.run.threads)
    out = Path(out)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, problems = discover(inputs, cfg.run.extensions)
    report = RunReport(out)
    for outcome in problems:
        log.error("%s: %s", outcome.path, outcome.error)
        report.outcomes.append(outcome)
        if on_result is not None:
            on_result(outcome)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    pipeline = Pipeline.build(cfg)
    pipeline.manifest().write(out)

    busy: list[Path] = []

    def record(outcome: VideoOutcome) -> None:
        if outcome.status == "busy":
            busy.append(Path(outcome.path))
            return
        report.outcomes.append(outcome)
        if outcome.status == "error":
            log.error("%s: %s", outcome.path, outcome.error)
        elif outcome.status == "skipped":
            log.info("%s: already done, skipped", outcome.path)
        if on_result is not None:
            on_result(outcome)

    processor = VideoProcessor(pipeline, out)  # the models already loaded for the manifest
    here = lambda: (lambda item, progress: processor.process(item[0], progress, wait=item[1]))  # noqa: E731
    progress = None if on_progress is None else (lambda item, done, total: on_progress(item[0], done, total))
    if cfg.run.workers <= 1 or len(files) <= 1:
        get_executor("serial").map(here, [(f, False) for f in files], record, progress)
    else:
        executor = get_executor(cfg.run.executor, cfg.run.workers)
        executor.map(functools.partial(_build_worker, cfg, out), [(f, False) for f in files], record, progress)
    if busy:  # another process had them: wait for it, then they are usually done
        log.info("%d video(s) were being processed by another run; waiting for it", len(busy))
        get_executor("serial").map(here, [(f, True) for f in busy], record, progress)
    report.outcomes.sort(key=lambda o: o.path)
    return report
