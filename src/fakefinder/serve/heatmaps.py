"""Grad-CAM heatmaps of a job's most suspicious faces, made after its verdict; a job's `heatmaps` says how far they
are (pending, ready, none, failed)."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from ..errors import one_line
from .records import Job
from .store import JobStore

HEATMAPS = 4  # most suspicious faces explained per input


class Heatmaps:
    """One job at a time, on a worker of their own: a verdict never waits for another upload's heatmaps."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heatmaps")

    def submit(self, job: Job, model, faces, view: dict) -> None:
        """Explain `faces` (the verdict's most suspicious) with the model `model()` gives (PyTorch's: loaded then, on
        this worker, after the verdict, where ONNX Runtime gave it); `view` is the job's view, written again with
        them."""
        self._pool.submit(self._explain, job, model, faces, view)

    def _explain(self, job: Job, model, faces, view: dict) -> None:
        """The heatmaps, added to the job's view once all are written."""
        from ..inference.explain import heatmap_pngs

        try:
            heat = []
            for rank, (face, png) in enumerate(heatmap_pngs(model(), faces)):
                (job.folder / f"heatmap-{rank}.png").write_bytes(png)
                heat.append({"rank": rank, "frame": face.frame_index, "t": face.t, "track": face.track,
                             "p_fake": face.p_fake})
            self.store.write(job, "view.json", {**view, "heatmaps": heat})
            job.heatmaps = "ready"
        except Exception as exc:  # noqa: BLE001 - the verdict stands without its heatmaps (or its folder is gone)
            job.heatmaps = "failed"
            with contextlib.suppress(OSError):
                self.store.write(job, "view.json", {**view, "heatmaps_error": one_line(exc)})

    def close(self) -> None:
        """Heatmaps not started are dropped; the one being made is finished."""
        self._pool.shutdown(wait=True, cancel_futures=True)
