"""Executors: how work items (a video, a time range of a long video, a merge) are mapped
over workers.

Every executor takes a picklable `make_worker()` that builds a worker once per process
(models load once per process, not once per item) and returns `worker(item, progress)`.
Results come back through `on_result` as they finish; `on_result` may return further
items (a long video comes back as its time ranges, the last range as its merge), which the
executor runs too. Fine-grained progress (seconds of video decoded) only where the worker
runs in this process. Ray (`vidpipe.executors_ray`, the optional extra `vidpipe[ray]`) is
one more executor, imported only when chosen.
"""

from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable

Worker = Callable[..., Any]
MakeWorker = Callable[[], Worker]
Progress = Callable[[Any, float, float], None]  # (item, seconds done, seconds in all)
OnResult = Callable[[Any], "Iterable[Any] | None"]  # may return follow-up items
OnError = Callable[[Any, str], Any]  # (item, one-line reason) -> a result for it


class Executor(ABC):
    """Runs items on workers. `workers`: worker processes per machine (the cores are split
    between them, see `threads_per_worker`)."""

    def __init__(self, workers: int = 1, **options: Any) -> None:
        self.workers = max(1, int(workers))
        self.options = options

    @abstractmethod
    def map(self, make_worker: MakeWorker, items: Iterable[Any], on_result: OnResult,
            on_progress: Progress | None = None, on_error: OnError | None = None) -> None:
        """Run the worker on every item, and on every item `on_result` returns; call
        `on_result` with each result. A worker that dies is the executor's to handle:
        `on_error(item, reason)` turns what it cannot recover into a result."""


class SerialExecutor(Executor):
    """Everything in this process, one item after the other."""

    def map(self, make_worker, items, on_result, on_progress=None, on_error=None) -> None:
        worker = make_worker()
        queue = deque(items)
        while queue:
            item = queue.popleft()
            hook = None if on_progress is None else (lambda done, total, item=item: on_progress(item, done, total))
            queue.extend(on_result(worker(item, hook)) or ())


_worker: Worker | None = None


def _init(make_worker: MakeWorker) -> None:
    global _worker
    _worker = make_worker()


def _call(item: Any) -> Any:
    assert _worker is not None
    return _worker(item, None)


class ProcessExecutor(Executor):
    """Items spread over `workers` local processes (spawned: onnxruntime's threads do not
    survive fork); everything in this process when there is one worker."""

    def map(self, make_worker, items, on_result, on_progress=None, on_error=None) -> None:
        if self.workers <= 1:
            SerialExecutor().map(make_worker, items, on_result, on_progress, on_error)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init, initargs=(make_worker,)) as pool:
            running: set[Future] = {pool.submit(_call, item) for item in items}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running |= {pool.submit(_call, item) for item in on_result(future.result()) or ()}


EXECUTORS: dict[str, type[Executor] | str] = {
    "serial": SerialExecutor,
    "processes": ProcessExecutor,
    "ray": "vidpipe.executors_ray:RayExecutor",  # imported when chosen: Ray is an optional extra
}


def register_executor(name: str, cls: type[Executor] | str) -> None:
    """Make an executor available by name (a class, or "module:Class" imported on use)."""
    EXECUTORS[name] = cls


def get_executor(name: str, workers: int = 1, **options: Any) -> Executor:
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}") from None
    if isinstance(cls, str):
        import importlib

        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls(workers, **options)


def threads_per_worker(workers: int, threads: int = 0) -> int:
    """Threads each worker's models and decoder may use: the cores split between workers
    (so N workers do not fight over the same cores), unless set explicitly; 0 (each
    library's own default: every core) for a single worker."""
    if threads > 0 or workers <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // workers)
