"""The Python API: `run` a folder of videos into a feature store, `read_table` it back.

The CLI is a thin shell over this module: progress comes out through callbacks (the CLI
draws tqdm bars with them), results through a `RunReport`.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from vidpipe.config import Config
from vidpipe.devices import with_device_batches
from vidpipe.executors import get_executor, threads_per_worker
from vidpipe.pipeline.runner import Pipeline, VideoOutcome, VideoProcessor
from vidpipe.pipeline.scan import ScanAhead
from vidpipe.pipeline.spans import may_split
from vidpipe.ranges import MergeTask, RangeTask, merge_ranges, process_range
from vidpipe.store import read_table, record_error, remove_stale_temporaries, written_since
from vidpipe.util import blas_on_one_thread, collector_paused
from vidpipe.video import content_id, file_problem
from vidpipe.weights import check_named_dirs

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
    and the inputs that cannot be read, each with its one-line reason: missing paths,
    dangling symbolic links, FIFOs and devices (checked without reading them: they would
    block or never end), unreadable files and folders."""
    files: list[Path] = []
    problems: list[VideoOutcome] = []
    exts = {e.lower() for e in extensions}

    def candidate(f: Path) -> None:
        problem = file_problem(f)
        if problem is None:
            files.append(f)
        else:
            problems.append(VideoOutcome(str(f), None, "error", error=problem))

    def unreadable_folder(e: OSError) -> None:
        problems.append(VideoOutcome(e.filename, None, "error", error=f"cannot read folder: {e.strerror}"))

    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            candidate(p)
            continue
        found = []
        for folder, subfolders, names in os.walk(p, onerror=unreadable_folder):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            found += [Path(folder) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in exts]
        for f in sorted(found):
            candidate(f)
    # Every path once; two paths to the same bytes both go through (the second is skipped
    # as done, but its path is recorded).
    return list(dict.fromkeys(f.absolute() for f in files)), problems


@dataclass(frozen=True)
class VideoTask:
    """Process one file (`wait`: for the run that holds it to finish first)."""

    path: Path
    wait: bool = False


Task = VideoTask | RangeTask | MergeTask


def _work(processor: VideoProcessor, task: Task, progress) -> VideoOutcome:
    if isinstance(task, RangeTask):
        return process_range(processor, task)
    if isinstance(task, MergeTask):
        return merge_ranges(processor, task)
    return processor.process(task.path, progress, wait=task.wait)


def _build_worker(cfg: Config, out: Path) -> Callable:
    """In a worker process: the pipeline, built once; returns worker(task, progress)."""
    logging.getLogger("vidpipe").setLevel(max(logging.getLogger("vidpipe").level, logging.WARNING))
    blas_on_one_thread()  # for the worker's life: NumPy's OpenBLAS now, the others after the build
    with collector_paused():
        pipeline = Pipeline.build(with_device_batches(cfg))
    blas_on_one_thread()
    if cfg.run.threads > 0 and "torch" in sys.modules:  # on the CPU no stage imports it (0.8 s a worker)
        sys.modules["torch"].set_num_threads(cfg.run.threads)
    return functools.partial(_work, VideoProcessor(pipeline, out, cfg.run.split_s))


def _ray_options(cfg: Config, pipeline: Pipeline) -> dict:
    """What each Ray task asks for: the most any of its stages needs. A stage may declare
    `resources = {"CPU": n, "GPU": share}`; otherwise it needs the worker's threads, and
    stages with models `run.gpus_per_worker` of a GPU unless the device is the CPU."""
    threads = cfg.run.threads or os.cpu_count() or 1
    gpus = cfg.run.gpus_per_worker if cfg.run.device != "cpu" else 0.0
    cpu, gpu = 1.0, 0.0
    for stage in pipeline.stages:
        need = getattr(stage, "resources", None) or {"CPU": threads, "GPU": gpus if stage.backends else 0.0}
        cpu, gpu = max(cpu, need.get("CPU", threads)), max(gpu, need.get("GPU", 0.0))
    return {"address": cfg.run.address, "num_cpus": cpu, "num_gpus": gpu}


def _in_this_process(cfg: Config, files: list[Path]) -> bool:
    """Whether the run goes on in this process (one worker, or one file that will not be
    split: not worth starting processes for)."""
    run = cfg.run
    if run.executor == "ray":
        return False
    if run.executor == "serial" or run.workers <= 1 or not files:
        return True
    return len(files) == 1 and not may_split(files[0], cfg, run.split_s)


def _executor(cfg: Config, files: list[Path], pipeline: Pipeline):
    """The executor for this run, or None to run everything in this process."""
    run = cfg.run
    if run.executor == "ray":
        return get_executor("ray", run.workers, **_ray_options(cfg, pipeline))
    return None if _in_this_process(cfg, files) else get_executor(run.executor, run.workers)


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
    started = time.time()
    cfg = copy.deepcopy(config or Config()).validate()
    check_named_dirs(cfg.run.weights_dir)
    cfg.run.threads = threads_per_worker(cfg.run.workers, cfg.run.threads)
    out = Path(out)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, problems = discover(inputs, cfg.run.extensions)
    report = RunReport(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    # In this process, the files' decode runs one file ahead of the stages (the first one's
    # while the models load): `ScanAhead`.
    scans = ScanAhead(cfg, out)
    if _in_this_process(cfg, files):
        scans.expect(files)
        if files and not may_split(files[0], cfg, cfg.run.split_s):
            scans.start()
    try:
        with collector_paused(), blas_on_one_thread():  # NumPy's OpenBLAS (the others load in the build)
            pipeline = Pipeline.build(with_device_batches(cfg))
        pipeline.manifest().write(out)
        for outcome in problems:  # recorded like every other failed file
            outcome.video_id = record_error(out, Path(outcome.path), outcome.error, pipeline.config_hash())
            log.error("%s: %s", outcome.path, outcome.error)
            report.outcomes.append(outcome)
            if on_result is not None:
                on_result(outcome)

        busy: list[Path] = []
        retried: set[str] = set()  # files run again because their worker died under them

        def record(outcome: VideoOutcome) -> None:
            if outcome.status == "busy":
                busy.append(Path(outcome.path))
                return
            if (outcome.status == "skipped" and outcome.path in retried
                    and written_since(out, outcome.video_id, started)):
                # this run's worker finished it (its error row, or its rows), then went down with the pool
                outcome.status = "error" if outcome.error else "ok"
            report.outcomes.append(outcome)
            if outcome.status == "error":
                log.error("%s: %s", outcome.path, outcome.error)
            elif outcome.status == "skipped":
                log.info("%s: already done, skipped", outcome.path)
            if on_result is not None:
                on_result(outcome)

        ranges: dict[str, int] = {}  # video -> how many time ranges
        left: dict[str, int] = {}  # video -> ranges not done yet
        given_up: set[str] = set()  # videos a range of which was lost

        def follow(outcome: VideoOutcome) -> list[Task]:
            """Record an outcome; the tasks it leads to (a long video's ranges, then their merge)."""
            if outcome.status == "split":
                ranges[outcome.video_id] = left[outcome.video_id] = len(outcome.spans)
                log.info("%s: long video, processed in %d time ranges", Path(outcome.path).name, len(outcome.spans))
                return [RangeTask(outcome.path, outcome.video_id, s) for s in outcome.spans]
            if outcome.status == "range":
                left[outcome.video_id] -= 1
                if left[outcome.video_id] or outcome.video_id in given_up:
                    return []
                return [MergeTask(outcome.path, outcome.video_id, ranges[outcome.video_id])]
            record(outcome)
            return []

        def lost(task: Task, reason: str) -> VideoOutcome:
            """A task whose worker kept dying: its video fails (once), with its `videos` row."""
            video_id = getattr(task, "video_id", None)
            if isinstance(task, RangeTask) and video_id in given_up:
                return VideoOutcome(task.path, video_id, "range")
            if video_id is not None:
                given_up.add(video_id)
            try:
                video_id = video_id or content_id(Path(task.path))
            except OSError:
                pass  # keyed by its path then
            video_id = record_error(out, Path(task.path), reason, processor.config_hash, video_id)
            return VideoOutcome(str(task.path), video_id, "error", error=reason)

        processor = VideoProcessor(pipeline, out, cfg.run.split_s, scans)  # the models already loaded for the manifest
        here = lambda: functools.partial(_work, processor)  # noqa: E731
        progress = None if on_progress is None else (
            lambda task, done, total: on_progress(Path(task.path), done, total))
        tasks = [VideoTask(f) for f in files]
        executor = _executor(cfg, files, pipeline)
        with blas_on_one_thread():
            if executor is None:
                get_executor("serial").map(here, tasks, follow, progress)
            else:
                executor.map(functools.partial(_build_worker, cfg, out), tasks, follow, progress, on_error=lost,
                             on_retry=lambda task: retried.add(str(task.path)))
            if busy:  # another process had them: wait for it, then they are usually done
                log.info("%d video(s) were being processed by another run; waiting for it", len(busy))
                scans.expect(busy)
                get_executor("serial").map(here, [VideoTask(f, wait=True) for f in busy], follow, progress)
    finally:
        scans.expect(())  # a scan whose turn never came (an error, Ctrl-C) stops
    report.outcomes.sort(key=lambda o: o.path)
    return report
