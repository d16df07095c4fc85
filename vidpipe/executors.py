"""Executors: how "process one video" is mapped over the inputs.

Every executor takes a picklable `make_worker()` that builds a worker once per process
(models load once per process, not once per video) and returns `worker(item, progress)`.
Results come back through `on_result` as they finish; fine-grained progress (seconds of
video decoded) only where the worker runs in this process. Ray comes in as one more
executor, registered the same way.
"""

from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable

Worker = Callable[..., Any]
MakeWorker = Callable[[], Worker]
Progress = Callable[[Any, float, float], None]  # (item, seconds done, seconds in all)


class Executor(ABC):
    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    @abstractmethod
    def map(self, make_worker: MakeWorker, items: Iterable[Any], on_result: Callable[[Any], None],
            on_progress: Progress | None = None) -> None:
        """Run the worker on every item; call `on_result` with each result."""


class SerialExecutor(Executor):
    """Everything in this process, one item after the other."""

    def map(self, make_worker, items, on_result, on_progress=None) -> None:
        worker = make_worker()
        for item in items:
            hook = None if on_progress is None else (lambda done, total, item=item: on_progress(item, done, total))
            on_result(worker(item, hook))


_worker: Worker | None = None


def _init(make_worker: MakeWorker) -> None:
    global _worker
    _worker = make_worker()


def _call(item: Any) -> Any:
    assert _worker is not None
    return _worker(item, None)


class ProcessExecutor(Executor):
    """Items spread over `workers` local processes (spawned: onnxruntime's threads do not
    survive fork); one item runs in this process when there is only one."""

    def map(self, make_worker, items, on_result, on_progress=None) -> None:
        items = list(items)
        if self.workers <= 1 or len(items) <= 1:
            SerialExecutor().map(make_worker, items, on_result, on_progress)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(self.workers, len(items)), mp_context=context,
                                 initializer=_init, initargs=(make_worker,)) as pool:
            for future in as_completed([pool.submit(_call, item) for item in items]):
                on_result(future.result())


EXECUTORS: dict[str, type[Executor]] = {"serial": SerialExecutor, "processes": ProcessExecutor}


def register_executor(name: str, cls: type[Executor]) -> None:
    EXECUTORS[name] = cls


def get_executor(name: str, workers: int = 1) -> Executor:
    try:
        return EXECUTORS[name](workers)
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}") from None


def threads_per_worker(workers: int, threads: int = 0) -> int:
    """Threads each worker's models and decoder may use: the cores split between workers
    (so N workers do not fight over the same cores), unless set explicitly; 0 (each
    library's own default: every core) for a single worker."""
    if threads > 0 or workers <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // workers)
