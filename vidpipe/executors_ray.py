"""The Ray executor (`--executor ray [--address ADDR]`, the optional extra `vidpipe[ray]`).

Each item (a video, a time range of a long video, the merge of its ranges) is one Ray task
asking for the CPUs (and GPU share) its stages need. Tasks are retried when their worker
process or node dies: the store's per-video lock and atomic per-video commit (per-range for
ranges) make a retried task write its rows exactly once. Each Ray worker process builds the
pipeline once and keeps it for every task of the run, as a local worker process does.

The feature store is the meeting point: every node must see OUT at the same path (local
disk for a one-machine cluster, a shared file system such as NFS for several machines).
Without `--address`, a private Ray instance is started on this machine for the run,
listening on the loopback interface only, and stopped at the end.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from vidpipe.config import ConfigError
from vidpipe.executors import Executor, MakeWorker, Worker

log = logging.getLogger("vidpipe")

# Ray binds every port to the loopback interface when it believes it runs without a
# cluster (its switch for desktops); a private instance for one run needs nothing more.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
MAX_RETRIES = 3  # a task whose worker died is run again this many times


def import_ray(local: bool) -> Any:
    """The `ray` module; a one-line error when the extra is not installed."""
    if local:
        os.environ.setdefault(_LOOPBACK_ENV, "0")  # read when ray is first imported
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray executor needs Ray: pip install 'vidpipe[ray]'") from None
    return ray


_built: tuple[str, Worker] | None = None


def _run_item(token: str, make_worker: MakeWorker, item: Any) -> Any:
    """In a Ray worker process: build the worker for this run once, then run the item."""
    global _built
    if _built is None or _built[0] != token:
        _built = None  # drop the previous run's models first
        _built = (token, make_worker())
    return _built[1](item, None)


class RayExecutor(Executor):
    """Items as Ray tasks. Options: `address` (a running cluster; None starts a private
    one here), `num_cpus` and `num_gpus` (what each task asks for), `max_retries`."""

    def map(self, make_worker, items, on_result, on_progress=None, on_error=None, on_retry=None) -> None:
        # Ray retries a task whose worker died itself (`max_retries`), unseen here: `on_retry`
        # is not called.
        address = self.options.get("address")
        ray = import_ray(local=address is None)
        started = not ray.is_initialized()
        if started:
            if address is None:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            self._map(ray, make_worker, list(items), on_result, on_error)
        finally:
            if started:
                ray.shutdown()

    def task_options(self) -> dict[str, Any]:
        return {
            "num_cpus": float(self.options.get("num_cpus") or 1),
            "num_gpus": float(self.options.get("num_gpus") or 0),
            "max_retries": int(self.options.get("max_retries", MAX_RETRIES)),
            "retry_exceptions": False,  # only a dead worker is worth a retry; a bad file is an outcome
        }

    def _map(self, ray, make_worker, pending: list[Any], on_result, on_error) -> None:
        options = self.task_options()
        remote = ray.remote(_run_item).options(**options)
        token, maker = uuid.uuid4().hex, ray.put(make_worker)
        # Enough tasks in flight to fill the cluster twice over; the rest wait here.
        total = ray.cluster_resources()
        slots = int(total.get("CPU", 1) // options["num_cpus"])
        if options["num_gpus"] > 0:
            slots = min(slots, int(total.get("GPU", 0) // options["num_gpus"]))
        if slots < 1:
            raise ConfigError(f"the Ray cluster cannot fit one task asking for {options['num_cpus']:g} CPUs and "
                              f"{options['num_gpus']:g} GPUs (it has {total.get('CPU', 0):g} CPUs, "
                              f"{total.get('GPU', 0):g} GPUs)")
        limit = 2 * slots
        pending.reverse()  # pop() from the end keeps the given order
        running: dict[Any, Any] = {}
        while pending or running:
            while pending and len(running) < limit:
                item = pending.pop()
                running[remote.remote(token, maker, item)] = item
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                item = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died more than max_retries times
                    if on_error is None:
                        raise
                    reason = f"worker lost after {options['max_retries']} retries: {type(e).__name__}"
                    log.error("%s", reason)
                    result = on_error(item, reason)
                follow = list(on_result(result) or ())
                pending.extend(reversed(follow))
