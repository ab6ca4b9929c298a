"""What the web app's parts share about a job: its record, its id's form, and the error a refused request gets."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FakefinderError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class JobError(FakefinderError):
    """A request the job queue refuses; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
