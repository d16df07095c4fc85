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

import ctypes
import multiprocessing
import os
import signal
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable

from vidpipe.util import first_line

Worker = Callable[..., Any]
MakeWorker = Callable[[], Worker]
Progress = Callable[[Any, float, float], None]  # (item, seconds done, seconds in all)
OnResult = Callable[[Any], "Iterable[Any] | None"]  # may return follow-up items
OnError = Callable[[Any, str], Any]  # (item, one-line reason) -> a result for it
OnRetry = Callable[[Any], None]  # told of an item run again because its worker died under it


class Executor(ABC):
    """Runs items on workers. `workers`: worker processes per machine (the cores are split
    between them, see `threads_per_worker`)."""

    def __init__(self, workers: int = 1, **options: Any) -> None:
        self.workers = max(1, int(workers))
        self.options = options

    @abstractmethod
    def map(self, make_worker: MakeWorker, items: Iterable[Any], on_result: OnResult,
            on_progress: Progress | None = None, on_error: OnError | None = None,
            on_retry: OnRetry | None = None) -> None:
        """Run the worker on every item, and on every item `on_result` returns; call
        `on_result` with each result. A worker that dies is the executor's to handle:
        `on_error(item, reason)` turns what it cannot recover into a result, and
        `on_retry(item)` is told of each item it runs again (its work may have been done
        before the worker died, its result lost)."""


class SerialExecutor(Executor):
    """Everything in this process, one item after the other."""

    def map(self, make_worker, items, on_result, on_progress=None, on_error=None, on_retry=None) -> None:
        worker = make_worker()
        queue = deque(items)
        while queue:
            item = queue.popleft()
            hook = None if on_progress is None else (lambda done, total, item=item: on_progress(item, done, total))
            queue.extend(on_result(worker(item, hook)) or ())


_worker: Worker | None = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this worker when the process that started it dies, even by
    SIGKILL, so a worker holding its models (~800 MB) never outlives its run. Elsewhere a
    no-op."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _init(make_worker: MakeWorker, parent_pid: int) -> None:
    global _worker
    _die_with_parent(parent_pid)
    _worker = make_worker()


def _call(item: Any) -> Any:
    assert _worker is not None
    return _worker(item, None)


WORKER_DIED = "its worker process died while processing it (a crash in a native library, or out of memory)"


class ProcessExecutor(Executor):
    """Items spread over `workers` local processes (spawned: onnxruntime's threads do not
    survive fork); everything in this process when there is one worker.

    A worker that dies (a segfault in a decoder or model, the OOM killer) breaks the whole
    pool: the pool is rebuilt, and the items that were in flight are retried one at a time
    alone, so the one that kills its worker again is known: `on_error` makes its result.
    At most `workers` items are in flight, so no item merely queued is ever suspected."""

    def map(self, make_worker, items, on_result, on_progress=None, on_error=None, on_retry=None) -> None:
        if self.workers <= 1:
            SerialExecutor().map(make_worker, items, on_result, on_progress, on_error, on_retry)
            return
        context = multiprocessing.get_context("spawn")
        new_pool = lambda: ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init,  # noqa: E731
                                               initargs=(make_worker, os.getpid()))
        queue, suspects = deque(items), deque()
        running: dict[Future, Any] = {}
        pool = new_pool()
        try:
            while queue or suspects or running:
                if suspects:  # one alone, once nothing else runs
                    if not running:
                        item = suspects.popleft()
                        running[pool.submit(_call, item)] = item
                else:
                    while queue and len(running) < self.workers:
                        item = queue.popleft()
                        running[pool.submit(_call, item)] = item
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                died = []
                for future in done:
                    item = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        died.append(item)
                        continue
                    except Exception as e:
                        if on_error is None:
                            raise
                        result = on_error(item, f"unexpected {type(e).__name__}: {first_line(e)}")
                    queue.extend(on_result(result) or ())
                if not died:
                    continue
                if on_error is None:
                    raise BrokenProcessPool(f"{died[0]}: {WORKER_DIED}")
                died += running.values()  # the others in flight went down with the pool
                running.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
                if len(died) == 1:
                    queue.extend(on_result(on_error(died[0], WORKER_DIED)) or ())
                else:
                    suspects.extend(died)
                    if on_retry is not None:
                        for item in died:
                            on_retry(item)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


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
