"""Run a producer ahead of its consumer on a thread, through a bounded queue.

The runner decodes, detects shots and gathers each clip's frames on one thread while the
stages run the models on the clips already gathered: the models (on a GPU, or on the CPU
cores the decoder leaves idle) never wait for a decode, and memory stays bounded by the
queue. FFmpeg, OpenCV and ONNX Runtime release the GIL, so the two threads overlap.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def run_ahead(items: Iterable[T], size: int) -> Iterator[T]:
    """`items`, produced on a thread at most `size` items ahead of the consumer (0: on the
    consumer's own thread). An exception in the producer is raised in the consumer; a
    consumer that stops early stops the producer."""
    if size <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    source = iter(items)

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failed(e))
        finally:
            close = getattr(source, "close", None)  # a generator's open files, on this thread
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="vidpipe-decode", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
