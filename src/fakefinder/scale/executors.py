"""Where work runs: this process, local worker processes, or (see `ray_executor`) a Ray cluster.

Two seams. An executor maps a picklable function over items that arrive as a stream (the per-video work of
`prepare`, the shards of feature extraction) and yields results as they finish, with a bounded number in flight,
so memory stays flat on 100k+ videos. A launcher starts long-lived worker loops (`tune`'s) that find their own
work, and says when they have all returned.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
STOP_GRACE_S = 30.0  # how long a stopped worker loop may take to end as Ctrl-C ends it, before it is killed


class Executor(Protocol):
    """Runs `fn` on every item; results in completion order. `close` stops workers at once (on an interrupt)."""

    name: str

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


# A worker loop: `loop(job, parent)` works until nothing is left; `parent` is the pid of the process that
# launched it on this machine (the loop stops between units of work once it is gone), or None elsewhere.
WorkerLoop = Callable[[Any, "int | None"], None]


class Workers(Protocol):
    """Worker loops that a launcher started."""

    def done(self) -> bool:
        """All have returned."""

    def close(self) -> None:
        """Stop those still running and release what the launcher holds."""

    def errors(self) -> list[str]:
        """One line for each loop that failed, known once `close` has returned."""


class Launcher(Protocol):
    def __call__(self, loop: WorkerLoop, job: Any, count: int) -> Workers: ...


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


def _start_worker(parent: int, init: Callable[[], None] | None) -> None:
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
                                         initializer=_start_worker, initargs=(os.getpid(), self.init))
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


class _Processes:
    """Worker loops in spawned processes on this machine."""

    def __init__(self, loop: WorkerLoop, job: Any, count: int) -> None:
        ctx = get_context("spawn")
        self.processes = [ctx.Process(target=loop, args=(job, os.getpid())) for _ in range(count)]
        for process in self.processes:
            process.start()

    def done(self) -> bool:
        return not any(p.is_alive() for p in self.processes)

    def errors(self) -> list[str]:
        return [f"a worker process exited with code {p.exitcode}" for p in self.processes if p.exitcode]

    def close(self) -> None:
        """Stop the loops still running as Ctrl-C stops them (SIGINT: a trial ends as an interrupted run, and a
        rerun takes its configuration up again), kill one that has not ended within STOP_GRACE_S, and wait for
        all. Loops that returned are only joined."""
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
        for process in self.processes:
            process.join(timeout=STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()


def launch_processes(loop: WorkerLoop, job: Any, count: int) -> Workers:
    """The local launcher: `count` processes, each running `loop(job, this pid)`."""
    return _Processes(loop, job, count)
