"""Verdict jobs for the web app: uploads checked, queued on a bounded pool, followed as they run, kept for a while.

The queue is assembled from parts with one concern each: `uploads` (what is accepted), `store` (the jobs' table
and their private folders), `retention` (finished jobs deleted after a while), `heatmaps` (Grad-CAM of the most
suspicious faces, after the verdict) and `models` (loaded once, on first use, and shared).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import InputLimits, ServeSettings
from ..errors import one_line
from ..models.onnxfile import deadline
from .heatmaps import HEATMAPS, Heatmaps
from .models import Models
from .records import Job, JobError
from .retention import Sweeper
from .store import JobStore
from .uploads import Uploads

__all__ = ["Job", "JobError", "JobQueue"]

THUMB_SIDE = 360  # long side of the timeline's frame thumbnails


class JobQueue:
    """A bounded pool running verdicts; `models` maps a name to a model file, run id or checkpoint."""

    def __init__(self, models: dict[str, str], settings: ServeSettings | None = None, *, device: str = "auto",
                 tracking_uri: str | None = None, allow_dir: str | Path | None = None,
                 root: str | Path | None = None, limits: InputLimits | None = None, runtime: str | None = None
                 ) -> None:
        settings = settings or ServeSettings()
        self.models = Models(models, device=device, tracking_uri=tracking_uri, runtime=runtime,
                             limits=limits or InputLimits.preset("serve"))  # files from anyone: stricter than the CLI's
        self.uploads = Uploads(settings.upload_limit * 2**20, Path(allow_dir).resolve() if allow_dir else None)
        self.store = JobStore(root)
        self.max_queued = settings.queue
        self.timeout = settings.inference_timeout
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrent_verdicts, thread_name_prefix="verdict")
        self.heatmaps = Heatmaps(self.store)
        self._stop = threading.Event()
        self.sweeper = Sweeper(self.store, settings.retention * 60)

    @property
    def upload_limit(self) -> int:
        return self.uploads.limit

    def too_large(self) -> JobError:
        return self.uploads.too_large()

    def describe_models(self) -> list[dict]:
        return self.models.describe()

    def new_job(self, name: str, model: str | None) -> Job:
        model = self.models.named(model)
        active = self.store.active()
        if active >= self.max_queued:
            raise JobError(f"{active} jobs are waiting or running; try again in a moment", 503)
        return self.store.create(name, model)

    def input_path(self, job: Job) -> Path:
        return self.store.input_path(job)

    def submit_file(self, job: Job) -> Job:
        """Check the uploaded bytes (size limit, content) and queue the verdict."""
        try:
            self.uploads.check(self.input_path(job))
            self._pool.submit(self._run, job)
        except BaseException:  # refused, or the pool is shutting down: the job never holds a queue slot
            self.discard(job)
            raise
        return job

    def submit_path(self, job: Job, server_path: str) -> Job:
        """A file already on the server, accepted only under --allow-dir."""
        try:
            target = self.uploads.server_file(server_path)
        except JobError:
            self.discard(job)
            raise
        os.symlink(target, self.input_path(job))
        return self.submit_file(job)

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def discard(self, job: Job) -> None:
        self.store.discard(job)

    def result(self, job: Job) -> dict | None:
        return self.store.result(job)

    def view(self, job: Job) -> dict:
        return self.store.view(job)

    def sweep(self) -> int:
        """Delete finished jobs older than the retention time now; returns how many."""
        return self.sweeper.sweep()

    def wait(self, job: Job, timeout: float) -> None:
        """Until the job has nothing left to do (its verdict and its heatmaps), or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while (job.state in ("queued", "running") or job.heatmaps == "pending") and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self, job: Job) -> None:
        import cv2

        job.state = "running"
        deadline_at = time.monotonic() + self.timeout
        late = f"the verdict took longer than the {self.timeout:g} s this server gives one (--inference-timeout)"
        try:
            detector = self.models.detector(job.model)
            thumbs = job.folder / "frames"
            thumbs.mkdir(exist_ok=True)
            sizes: dict[int, list[int]] = {}

            def progress(frames: int, faces: int) -> None:
                if self._stop.is_set():  # the server is stopping (Ctrl-C): end this verdict at the next frame
                    raise JobError("the server is stopping", 503)
                if time.monotonic() > deadline_at:  # checked at every frame: a verdict cannot hold its slot for ever
                    raise JobError(late, 504)
                job.frames, job.faces = frames, faces

            def thumbnail(frame) -> None:
                h, w = frame.image.shape[:2]
                k = min(1.0, THUMB_SIDE / max(h, w))
                small = cv2.resize(frame.image, (max(1, round(w * k)), max(1, round(h * k))),
                                   interpolation=cv2.INTER_AREA)
                ok, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
                if ok:
                    (thumbs / f"{frame.index}.jpg").write_bytes(jpg.tobytes())
                    sizes[frame.index] = [small.shape[1], small.shape[0], round(w / frame.scale),
                                          round(h / frame.scale)]

            with deadline(deadline_at, late):  # stops an ONNX Runtime call still running then, too
                result = detector.predict_video(self.input_path(job), on_progress=progress, on_frame=thumbnail,
                                                keep_faces=HEATMAPS if detector.explains else 0)
            self.input_path(job).unlink(missing_ok=True)  # gone before the verdict is: we keep verdicts, not uploads
            data = result.to_dict()
            data["input"] = job.name
            view = {"heatmaps": [], "thumbnails": {str(k): v for k, v in sizes.items()},
                    "meaning": detector.rule.meaning(), "model": job.model,
                    "evidence": detector.card.summary(),
                    "strength": detector.strength_summary(),
                    "calibration": detector.card.calibration.method,
                    "heatmaps_note": "" if detector.explains else "no heatmaps: Grad-CAM needs gradients, which "
                                                                  "the ONNX runtime does not give"}
            self.store.write(job, "result.json", data)
            self.store.write(job, "view.json", view)
            job.heatmaps = "pending" if result.suspicious and not result.error else "none"
            job.error, job.finished = result.error, time.time()
            job.state = "failed" if result.error else "done"
            if job.heatmaps == "pending":
                self.heatmaps.submit(job, detector.differentiable, result.suspicious, view)
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported with the job, the server goes on
            self.input_path(job).unlink(missing_ok=True)  # gone before the job says it failed
            job.error, job.finished = one_line(exc), time.time()
            job.state, job.heatmaps = "failed", "none"
        finally:
            self.input_path(job).unlink(missing_ok=True)  # the verdict is what we keep, not the upload

    def close(self) -> None:
        """Stop: queued jobs are dropped, running ones end at their next frame, then the files go (a verdict still
        writing would put its folder back after they went)."""
        self._stop.set()
        self.sweeper.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.heatmaps.close()
        self.store.close()
