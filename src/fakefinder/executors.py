"""Where the per-item work of `prepare` and feature extraction runs: this process, local worker processes,
or (see `ray_executor`) a Ray cluster. An executor maps a picklable function over items that arrive as a stream
and yields results as they finish, with a bounded number in flight, so memory stays flat on 100k+ videos.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs `fn` on every item; results in completion order. `close` stops workers at once (on an interrupt)."""

    name: str

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """This process, one item after the other."""

    name = "serial"

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)

    def close(self) -> None:
        pass


def _watch_parent(parent: int) -> None:
    """Exit when the process that started us is gone (killed with SIGKILL, say): no orphans doing work."""
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_init(parent: int, init: Callable[[], None] | None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if init is not None:
        init()


class LocalExecutor:
    """`workers` spawned processes on this machine; serial in this process for one worker."""

    name = "local"

    def __init__(self, workers: int | None = None, *, init: Callable[[], None] | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.init = init
        self._pool: ProcessPoolExecutor | None = None

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self.workers <= 1:
            if self.init:
                self.init()
            yield from SerialExecutor().map_unordered(fn, items)
            return
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"),
                                         initializer=_worker_init, initargs=(os.getpid(), self.init))
        try:
            pending, queue = set(), iter(items)
            while True:
                for item in queue:
                    pending.add(self._pool.submit(fn, item))
                    if len(pending) >= 4 * self.workers:
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers now: cancel what has not started and terminate what runs (SIGTERM, Ctrl-C)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)
