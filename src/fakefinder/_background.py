"""Run an iterator ahead in a thread, so that producing items (decoding, detecting faces) overlaps consuming them
(scoring): both spend their time in native code that releases the GIL. A bounded queue keeps memory bounded."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Stopped(Exception):
    """Raised in the producer by `Ahead.check` once the consumer has left."""


class Ahead(Generic[T]):
    """`items`, produced by a thread at most `depth` ahead of the consumer. An exception raised while producing is
    raised in the consumer; leaving early (break, an exception) stops the producer at its next item, or sooner
    where it calls `check`."""

    def __init__(self, items: Iterator[T], depth: int, *, name: str = "ahead") -> None:
        self._items = items
        self._buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def __iter__(self) -> Iterator[T]:
        self._thread.start()
        try:
            while True:
                try:
                    # Never blocked for long: a signal (Ctrl-C) that the kernel hands to the producer's thread only
                    # raises here once this thread runs Python again.
                    item, error = self._buffer.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    if error is not None:
                        raise error
                    return
                yield item
        finally:
            self._stop.set()
            self._thread.join()

    def check(self) -> None:
        """For the producer, between pieces of work that yield nothing (a frame without a face): stop here once the
        consumer has left (Ctrl-C), not after the rest of a long video."""
        if self._stop.is_set():
            raise _Stopped

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    break
            else:
                self._put((_DONE, None))
        except _Stopped:
            pass  # the consumer has left: nobody is waiting for the rest
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put((_DONE, exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()  # in this thread, the one that ran it: a generator's cleanup (an open file) runs here
