"""Finished jobs are kept for the retention time, then deleted: swept on a thread of its own."""

from __future__ import annotations

import threading
import time

from .store import JobStore


class Sweeper:
    """Deletes `store`'s jobs finished more than `retention_s` ago, every so often until `stop`."""

    def __init__(self, store: JobStore, retention_s: float) -> None:
        self.store, self.retention_s = store, retention_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="retention")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(min(60.0, max(1.0, self.retention_s / 4))):
            self.sweep()

    def sweep(self) -> int:
        """Delete finished jobs older than the retention time; returns how many."""
        now, gone = time.time(), 0
        for job in list(self.store.jobs.values()):  # heatmaps still being written would put the folder back
            if (job.state in ("done", "failed") and job.heatmaps != "pending"
                    and now - (job.finished or job.created) > self.retention_s):
                self.store.discard(job)
                gone += 1
        return gone

    def stop(self) -> None:
        self._stop.set()
