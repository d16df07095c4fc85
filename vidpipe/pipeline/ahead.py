"""Run a producer ahead of its consumer on a thread, through a bounded queue.

The runner decodes, detects shots and gathers each clip's frames on one thread while the
stages run the models on the clips already gathered: the models (on a GPU, or on the CPU
cores the decoder leaves idle) never wait for a decode, and memory stays bounded by the
queue. FFmpeg, OpenCV and ONNX Runtime release the GIL, so the two threads overlap.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

log = logging.getLogger("vidpipe")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Ahead(Generic[T]):
    """`items`, produced on a thread from the moment this is made, at most `size` items
    ahead of the consumer. An exception in the producer is raised in the consumer; `close`
    (or a consumer that stops iterating early) stops the producer and closes `items` on its
    thread. `on_done()` runs on the producer's thread once every item is produced, before
    the consumer can see the end (the runner starts the next file's decode there)."""

    def __init__(self, items: Iterable[T], size: int, on_done: Callable[[], None] | None = None,
                 name: str = "vidpipe-decode") -> None:
        self._buffer: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._source = iter(items)
        self._on_done = on_done
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _put(self, value: object) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            if self._on_done is not None:
                try:
                    self._on_done()
                except Exception:  # what comes next must not fail what is done
                    log.debug("decode-ahead follow-up failed", exc_info=True)
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Failed(e))
        finally:
            close = getattr(self._source, "close", None)  # a generator's open files, on this thread
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        try:
            while (item := self._buffer.get()) is not _DONE:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer (if it still runs) and wait for it."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def run_ahead(items: Iterable[T], size: int) -> Iterator[T]:
    """`items`, produced on a thread at most `size` items ahead of the consumer (0: on the
    consumer's own thread). An exception in the producer is raised in the consumer; a
    consumer that stops early stops the producer."""
    if size <= 0:
        return iter(items)
    return iter(Ahead(items, size))
