"""Where the web app keeps its jobs: a table by id, and a private folder each named by a random id (never by
anything a request sends) holding the input under a name we choose, the verdict JSON, frame thumbnails and
Grad-CAM heatmaps. A page reload, or a program polling the API, finds the job by its id."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from .. import _files
from .records import JOB_ID, Job, JobError


class JobStore:
    """The jobs and their folders under `root` (default: a private temporary folder, removed on `close`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._owns_root = root is None  # a folder the caller gave is theirs: only our job folders go
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fakefinder-serve-"))
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # uploads are private (job folders are too)
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()  # the jobs table; held briefly, also by request handlers

    def create(self, name: str, model: str) -> Job:
        """A new queued job in a folder of its own; `name` is what the uploader called the file."""
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir(mode=0o700)
        clean = re.sub(r"[^\w. -]+", "_", os.path.basename(name or "upload"))[:120] or "upload"
        job = Job(job_id, clean, model, folder)
        with self._lock:
            self.jobs[job_id] = job
        return job

    def active(self) -> int:
        """How many jobs are queued or running."""
        return sum(j.state in ("queued", "running") for j in self.jobs.values())

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

    def input_path(self, job: Job) -> Path:
        return job.folder / "input"

    def write(self, job: Job, name: str, data: dict) -> None:
        """The job's JSON file `name` (result.json: the verdict; view.json: what the page shows beside it)."""
        _files.write_text(job.folder / name, json.dumps(data))

    def result(self, job: Job) -> dict | None:
        path = job.folder / "result.json"
        return json.loads(path.read_text()) if job.state == "done" and path.is_file() else None

    def view(self, job: Job) -> dict:
        path = job.folder / "view.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def close(self) -> None:
        """The files go: the whole root when it is ours, else our jobs' folders."""
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for job in list(self.jobs.values()):
                self.discard(job)
