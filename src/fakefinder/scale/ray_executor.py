"""Running fakefinder's per-item work on a Ray cluster: `prepare` and feature extraction through the executor
seam, and `tune`'s worker loops as Ray tasks through the launcher seam (see `executors`).

Every node must see the collection, OUT and the feature cache at the same paths (a shared file system); the
work functions are the same as local ones, so a Ray run keeps their guarantees: each video commits its own
atomic record, shards are committed whole, claims make every tuning configuration run once. A task whose node
dies is retried on another node; the driver streams the work list and the results, holding a bounded number
of tasks in flight.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ..errors import UsageError, one_line
from .executors import Launcher, WorkerLoop

T = TypeVar("T")
R = TypeVar("R")
TASK_RETRIES = 3


def connect(address: str | None = None):
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one. Returns (ray, started_here)."""
    try:
        import ray
    except ImportError:
        raise UsageError("Ray is not installed: pip install 'fakefinder[scale]' (or pip install ray)") from None
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot reach a Ray cluster at {address}: {one_line(exc, limit=160, typed=False)}") from None
    return ray, True


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


class _Worker:
    """An actor that holds what a job builds (a base) once, for every chunk it is given."""

    def run(self, fn, item):
        return fn(item)


class RayExecutor:
    """Tasks on a Ray cluster (`actors=N`: a pool of N actors instead, each holding its base once and taking a
    GPU where the cluster has GPUs)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, actors: int | None = None, cpus_per_task: float = 1.0,
                 in_flight: int | None = None) -> None:
        self.ray, self._started = connect(address)
        self.actors, self.cpus_per_task = actors, cpus_per_task
        resources = self.ray.cluster_resources()
        self.cpus = int(resources.get("CPU", 1)) or 1
        self.gpus = int(resources.get("GPU", 0))
        self.in_flight = in_flight or 4 * self.cpus
        self._pending: list = []

    @classmethod
    def for_extraction(cls, address: str | None = None) -> RayExecutor:
        """A pool of feature extractors: one actor per GPU where the cluster has GPUs, else one per 4 CPUs
        (each computing with 4 threads)."""
        probe = cls(address)
        if probe.gpus:
            probe.actors, probe.cpus_per_task = probe.gpus, 1.0
        else:
            probe.actors, probe.cpus_per_task = max(1, probe.cpus // 4), float(min(4, probe.cpus))
        return probe

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        ray = self.ray
        queue = iter(items)
        if self.actors:
            gpus = 1 if self.gpus >= self.actors else 0
            actor = ray.remote(num_cpus=self.cpus_per_task, num_gpus=gpus, max_restarts=TASK_RETRIES,
                               max_task_retries=TASK_RETRIES)(_Worker)
            pool = [actor.remote() for _ in range(self.actors)]
            submit = lambda i, item: pool[i % len(pool)].run.remote(fn, item)  # noqa: E731
        else:
            task = ray.remote(num_cpus=self.cpus_per_task, max_retries=TASK_RETRIES, retry_exceptions=False)(_call)
            fn_ref = ray.put(fn)
            submit = lambda i, item: task.remote(fn_ref, item)  # noqa: E731
        submitted = 0
        try:
            while True:
                for item in queue:
                    self._pending.append(submit(submitted, item))
                    submitted += 1
                    if len(self._pending) >= self.in_flight:
                        break
                if not self._pending:
                    return
                done, self._pending = ray.wait(self._pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            self.close(shutdown=False)

    def close(self, shutdown: bool = True) -> None:
        """Cancel what is still queued or running (Ctrl-C, SIGTERM); leave a cluster we started."""
        for ref in self._pending:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - an actor task or a finished one cannot be cancelled: fine
                pass
        self._pending = []
        if shutdown and self._started and self.ray.is_initialized():
            self.ray.shutdown()


class _RayWorkers:
    """Worker loops running as Ray tasks (see `executors.Workers`)."""

    def __init__(self, ray, refs: list, started: bool) -> None:
        self.ray, self.refs, self.started = ray, refs, started
        self._errors: list[str] = []

    def done(self) -> bool:
        ready, _ = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return len(ready) == len(self.refs)

    def errors(self) -> list[str]:
        return self._errors

    def close(self) -> None:
        self._errors = []
        ready, _ = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        for ref in ready:
            try:
                self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - reported by `tune`, which then refuses a partial study
                self._errors.append(one_line(exc))
        for ref in self.refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()


def ray_launcher(address: str | None = None) -> Launcher:
    """A launcher (see `executors.Launcher`) of worker loops as Ray tasks on the cluster at `address`. Each loop
    finds its own work (tune's claim configurations from the study's database, like any other worker); one whose
    node dies is replaced once its heartbeat stops."""
    def launch(loop: WorkerLoop, job, count: int) -> _RayWorkers:
        ray, started = connect(address)
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(loop)
        return _RayWorkers(ray, [task.remote(job, None) for _ in range(count)], started)

    return launch
