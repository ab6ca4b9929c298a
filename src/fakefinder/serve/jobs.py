"""Verdict jobs for the web app: uploads checked, queued on a bounded pool, followed as they run, kept for a while.

Each job owns a private folder named by a random id (never by anything a request sends): the input under a name
we choose, the verdict JSON, frame thumbnails, Grad-CAM heatmaps of the most suspicious faces. A page reload,
or a program polling the API, finds the job by its id. Models are loaded once, on first use, and shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import _files
from ..config import InputLimits, ServeSettings
from ..errors import FakefinderError, UsageError, one_line

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
THUMB_SIDE = 360  # long side of the timeline's frame thumbnails
HEATMAPS = 4  # most suspicious faces explained per input

# Magic bytes of the containers and images we read; anything else is refused before it reaches a decoder.
_SIGNATURES = ((4, b"ftyp", "MP4/MOV"), (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "AVI/WebP"),
               (0, b"\xff\xd8\xff", "JPEG"), (0, b"\x89PNG\r\n\x1a\n", "PNG"), (0, b"BM", "BMP"),
               (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"), (0, b"FLV", "FLV"),
               (0, b"\x00\x00\x01\xba", "MPEG-PS"), (0, b"0&\xb2u\x8ef\xcf\x11", "ASF/WMV"),
               (4, b"moov", "QuickTime"), (4, b"mdat", "QuickTime"), (4, b"free", "QuickTime"),
               (4, b"wide", "QuickTime"))


class JobError(FakefinderError):
    """A request the job queue refuses; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def sniff(path: Path) -> str:
    """The container an upload really is, by its first bytes. Raises JobError for an empty or foreign file."""
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        raise JobError("the file is empty")
    if head[0] == 0x47 and path.stat().st_size > 188:  # MPEG transport stream: a sync byte every 188 bytes
        with open(path, "rb") as f:
            f.seek(188)
            if f.read(1) == b"\x47":
                return "MPEG-TS"
    for offset, magic, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) / len(head)
    kind = "text" if printable > 0.95 else "not a format fakefinder reads"
    raise JobError(f"not a video or an image ({kind}; the first bytes are {head[:8]!r})", 415)


@dataclass
class Job:
    id: str
    name: str  # what the uploader called the file (shown, never used as a path)
    model: str
    folder: Path
    created: float = field(default_factory=time.time)
    finished: float | None = None  # when it became done or failed: retention counts from here
    state: str = "queued"  # queued | running | done | failed: the verdict's
    heatmaps: str = "pending"  # pending | ready | none (no face to explain) | failed: computed after the verdict
    frames: int = 0
    faces: int = 0
    error: str | None = None

    def status(self) -> dict:
        return {"id": self.id, "state": self.state, "heatmaps": self.heatmaps, "name": self.name, "model": self.model,
                "frames": self.frames, "faces": self.faces, "error": self.error}


class JobQueue:
    """A bounded pool running verdicts; `models` maps a name to a model file, run id or checkpoint."""

    def __init__(self, models: dict[str, str], settings: ServeSettings | None = None, *, device: str = "auto",
                 tracking_uri: str | None = None, allow_dir: str | Path | None = None,
                 root: str | Path | None = None, limits: InputLimits | None = None, runtime: str | None = None
                 ) -> None:
        if not models:
            raise UsageError("serve needs at least one --model")
        settings = settings or ServeSettings()
        self.models, self.device, self.tracking_uri, self.runtime = dict(models), device, tracking_uri, runtime
        self.limits = limits or InputLimits.preset("serve")  # files from anyone: stricter than the CLI's
        self.max_queued, self.retention_s = settings.queue, settings.retention * 60
        self.upload_limit = settings.upload_limit * 2**20
        self.allow_dir = Path(allow_dir).resolve() if allow_dir else None
        self._owns_root = root is None  # a folder the caller gave is theirs: only our job folders go
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fakefinder-serve-"))
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # uploads are private (job folders are too)
        self.jobs: dict[str, Job] = {}
        self._detectors: dict[str, object] = {}
        self._lock = threading.Lock()  # the jobs table; held briefly, also by request handlers
        self._loading = {name: threading.Lock() for name in self.models}  # one model loads at a time, alone
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrent_verdicts, thread_name_prefix="verdict")
        # Heatmaps come after their verdict, one job at a time, on a worker of their own: a verdict never waits
        # for another upload's heatmaps.
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heatmaps")
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, daemon=True, name="retention")
        self._sweeper.start()

    # ------------------------------------------------------------------ models

    def detector(self, name: str):
        """The loaded detector for `name` (loaded once, shared by every job)."""
        from ..inference.detector import load_detector

        if name not in self.models:
            raise JobError(f"unknown model {name!r} (offered: {', '.join(self.models)})", 404)
        with self._loading[name]:
            if name not in self._detectors:
                self._detectors[name] = load_detector(self.models[name], device=self.device,
                                                      tracking_uri=self.tracking_uri, limits=self.limits,
                                                      runtime=self.runtime)
        return self._detectors[name]

    def describe_models(self) -> list[dict]:
        out = []
        for name in self.models:
            d = self.detector(name)
            out.append({"name": name, "source": d.card.source, "backbone": d.card.base.backbone,
                        "threshold": d.threshold, "inconclusive_band": d.verdict.band, "meaning": d.verdict.meaning(),
                        "calibration": d.card.calibration.method, "dataset": d.card.dataset,
                        "evidence": dataclasses.asdict(d.card.evidence),
                        "evidence_summary": d.card.evidence.summary(d.card.dataset)})
        return out

    # ------------------------------------------------------------------ jobs

    def new_job(self, name: str, model: str | None) -> Job:
        model = model or next(iter(self.models))
        if model not in self.models:
            raise JobError(f"unknown model {model!r} (offered: {', '.join(self.models)})", 404)
        active = sum(j.state in ("queued", "running") for j in self.jobs.values())
        if active >= self.max_queued:
            raise JobError(f"{active} jobs are waiting or running; try again in a moment", 503)
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir(mode=0o700)
        clean = re.sub(r"[^\w. -]+", "_", os.path.basename(name or "upload"))[:120] or "upload"
        job = Job(job_id, clean, model, folder)
        with self._lock:
            self.jobs[job_id] = job
        return job

    def too_large(self) -> JobError:
        return JobError(f"the file is larger than the {self.upload_limit // 2**20} MB limit", 413)

    def input_path(self, job: Job) -> Path:
        return job.folder / "input"

    def submit_file(self, job: Job) -> Job:
        """Check the uploaded bytes (size limit, content) and queue the verdict."""
        path = self.input_path(job)
        try:
            if path.stat().st_size > self.upload_limit:
                raise self.too_large()
            sniff(path)
            self._pool.submit(self._run, job)
        except BaseException:  # refused, or the pool is shutting down: the job never holds a queue slot
            self.discard(job)
            raise
        return job

    def submit_path(self, job: Job, server_path: str) -> Job:
        """A file already on the server, accepted only under --allow-dir."""
        if self.allow_dir is None:
            self.discard(job)
            raise JobError("paths on the server are not accepted (start serve with --allow-dir DIR)", 403)
        if "\0" in server_path:
            self.discard(job)
            raise JobError("a path may not contain a NUL byte")
        target = (self.allow_dir / server_path).resolve()
        if not target.is_relative_to(self.allow_dir) or not target.is_file():
            self.discard(job)
            raise JobError("no such file under the allowed folder", 403 if not target.is_relative_to(
                self.allow_dir) else 404)
        os.symlink(target, self.input_path(job))
        return self.submit_file(job)

    def get(self, job_id: str) -> Job:
        if not JOB_ID.match(job_id or ""):
            raise JobError("not a job id", 400)
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError("no such job (finished jobs are kept for a while, then deleted)", 404)
        return job

    def discard(self, job: Job) -> None:
        with self._lock:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def result(self, job: Job) -> dict | None:
        path = job.folder / "result.json"
        return json.loads(path.read_text()) if job.state == "done" and path.is_file() else None

    def wait(self, job: Job, timeout: float) -> None:
        """Until the job has nothing left to do (its verdict and its heatmaps), or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while (job.state in ("queued", "running") or job.heatmaps == "pending") and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self, job: Job) -> None:
        import cv2

        job.state = "running"
        try:
            detector = self.detector(job.model)
            thumbs = job.folder / "frames"
            thumbs.mkdir(exist_ok=True)
            sizes: dict[int, list[int]] = {}

            def progress(frames: int, faces: int) -> None:
                if self._stop.is_set():  # the server is stopping (Ctrl-C): end this verdict at the next frame
                    raise JobError("the server is stopping", 503)
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

            result = detector.predict_video(self.input_path(job), on_progress=progress, on_frame=thumbnail,
                                            keep_faces=HEATMAPS if detector.explains else 0)
            self.input_path(job).unlink(missing_ok=True)  # gone before the verdict is: we keep verdicts, not uploads
            data = result.to_dict()
            data["input"] = job.name
            view = {"heatmaps": [], "thumbnails": {str(k): v for k, v in sizes.items()},
                    "meaning": detector.verdict.meaning(), "model": job.model,
                    "evidence": detector.card.evidence.summary(detector.card.dataset),
                    "calibration": detector.card.calibration.method,
                    "heatmaps_note": "" if detector.explains else "no heatmaps: Grad-CAM needs gradients, which "
                                                                  "the ONNX runtime does not give"}
            _files.write_text(job.folder / "result.json", json.dumps(data))
            _files.write_text(job.folder / "view.json", json.dumps(view))
            job.heatmaps = "pending" if result.suspicious and not result.error else "none"
            job.error, job.finished = result.error, time.time()
            job.state = "failed" if result.error else "done"
            if job.heatmaps == "pending":
                self._explainer.submit(self._explain, job, detector.model, result.suspicious, view)
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported with the job, the server goes on
            job.error, job.finished = one_line(exc), time.time()
            job.state, job.heatmaps = "failed", "none"
        finally:
            self.input_path(job).unlink(missing_ok=True)  # the verdict is what we keep, not the upload

    def _explain(self, job: Job, model, faces, view: dict) -> None:
        """Grad-CAM heatmaps of the job's most suspicious faces, added to its view once all are written."""
        from ..inference.explain import heatmap_pngs

        try:
            heat = []
            for rank, (face, png) in enumerate(heatmap_pngs(model, faces)):
                (job.folder / f"heatmap-{rank}.png").write_bytes(png)
                heat.append({"rank": rank, "frame": face.frame_index, "t": face.t, "track": face.track,
                             "p_fake": face.p_fake})
            _files.write_text(job.folder / "view.json", json.dumps({**view, "heatmaps": heat}))
            job.heatmaps = "ready"
        except Exception as exc:  # noqa: BLE001 - the verdict stands without its heatmaps (or its folder is gone)
            job.heatmaps = "failed"
            with contextlib.suppress(OSError):
                _files.write_text(job.folder / "view.json", json.dumps({**view, "heatmaps_error": one_line(exc)}))

    def view(self, job: Job) -> dict:
        path = job.folder / "view.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # ------------------------------------------------------------------ retention

    def _sweep_loop(self) -> None:
        while not self._stop.wait(min(60.0, max(1.0, self.retention_s / 4))):
            self.sweep()

    def sweep(self) -> int:
        """Delete finished jobs older than the retention time; returns how many."""
        now, gone = time.time(), 0
        for job in list(self.jobs.values()):  # heatmaps still being written would put the folder back
            if (job.state in ("done", "failed") and job.heatmaps != "pending"
                    and now - (job.finished or job.created) > self.retention_s):
                self.discard(job)
                gone += 1
        return gone

    def close(self) -> None:
        """Stop: queued jobs are dropped, running ones end at their next frame, then the files go (a verdict still
        writing would put its folder back after they went)."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._explainer.shutdown(wait=True, cancel_futures=True)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for job in list(self.jobs.values()):
                self.discard(job)
