"""`prepare`: a labelled collection of videos -> square face crops with provenance, resumably.

Each input is handled by `process_video`, a function of (input, settings) alone that writes its crops to a
scratch folder, renames it into place, then commits a small JSON record atomically. A rerun reuses every
record made with the same settings from the same file; the tables are rebuilt from the records at the end,
so killing the process at any moment loses at most the inputs in flight and never corrupts what is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import numpy as np

from . import _atomic
from .collection import Collection, Layout, VideoItem, discover
from .crops import square_crop
from .errors import UsageError, one_line
from .faces import DEFAULT_DETECTOR, DETECTORS, Box, FaceDetector, create_detector
from .frames import sample_frames
from .manifest import MANIFEST, MANIFEST_SCHEMA, PREPARE_INFO, STATE_DIR, VIDEOS, VIDEOS_SCHEMA, write_table

RECORD_FORMAT = 2  # 2: frames turned upright by the display rotation


@dataclass(frozen=True)
class PrepareSettings:
    """How frames are sampled and faces cropped; part of every record's key, so changing it redoes the work."""

    fps: float | None = 1.0
    frames: int | None = None  # evenly spaced frames per video; overrides fps
    max_side: int | None = 1000  # long side of the working frame (the reference resized to 1000)
    detector: str = DEFAULT_DETECTOR
    margin: float = 0.3  # of the box's long side, on every side; 0 = the tight square
    faces: Literal["largest", "all"] = "largest"
    min_face: int = 0  # smallest box side kept, in source-video pixels
    size: int = 224  # side of the saved square crops

    @classmethod
    def reference(cls) -> PrepareSettings:
        """The reference study: 1 fps, long side 1000, Haar `alt` with its settings, tight crops, all faces."""
        return cls(fps=1.0, frames=None, max_side=1000, detector="haar", margin=0.0, faces="all")

    def validate(self) -> None:
        """Raises UsageError naming the first unusable setting."""
        if self.frames is None and not (self.fps and self.fps > 0):
            raise UsageError("--fps must be positive (or give --frames N)")
        if self.frames is not None and self.frames < 1:
            raise UsageError("--frames must be at least 1")
        if self.max_side is not None and self.max_side < 32:
            raise UsageError("--max-side must be at least 32")
        if self.detector not in DETECTORS:
            raise UsageError(f"unknown detector {self.detector!r} (choose from {', '.join(DETECTORS)})")
        if self.margin < 0 or self.size < 8 or self.min_face < 0:
            raise UsageError("--margin and --min-face must be >= 0 and --size >= 8")
        if self.faces not in ("largest", "all"):
            raise UsageError("--faces must be 'largest' or 'all'")

    def digest(self) -> str:
        text = json.dumps([RECORD_FORMAT, dataclasses.asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare` did; the tables themselves are at `manifest_path` and `videos_path`."""

    out: Path
    layout: str
    dataset: str
    videos: int
    ok: int
    no_face: int
    errors: int
    faces: int
    reused: int
    seconds: float
    failures: tuple[tuple[str, str, str], ...] = field(default=())  # (source_path, status, reason)

    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST

    @property
    def videos_path(self) -> Path:
        return self.out / VIDEOS

    def summary(self) -> str:
        lines = [f"prepared {self.videos} inputs of dataset '{self.dataset}' ({self.layout} layout) into "
                 f"{self.out} in {self.seconds:.1f} s",
                 f"  ok {self.ok}, no face {self.no_face}, errors {self.errors} "
                 f"({self.reused} reused from an earlier run); {self.faces} face crops",
                 f"  {self.manifest_path}"]
        lines += [f"  {status:8} {path}: {reason}" for path, status, reason in self.failures]
        return "\n".join(lines)


# ---------------------------------------------------------------- one input (runs in worker processes)

_detectors: dict[str, FaceDetector] = {}


def _detector(name: str) -> FaceDetector:
    if name not in _detectors:
        _detectors[name] = create_detector(name)
    return _detectors[name]


def _fingerprint(item: VideoItem) -> list[int] | None:
    if item.path is None:
        return None
    st = item.path.stat()
    return [st.st_size, st.st_mtime_ns]


def _records_dir(out: Path) -> Path:
    return out / STATE_DIR / "records"


def _record_path(out: Path, video_id: str) -> Path:
    return _records_dir(out) / f"{hashlib.sha1(video_id.encode()).hexdigest()}.json"


def _provenance(item: VideoItem) -> dict:
    """The columns that every row of both tables carries about its input."""
    return {"dataset": item.dataset, "video_id": item.video_id, "source_path": item.source_path,
            "label": item.label, "group": item.group, "method": item.method}


def _video_row(item: VideoItem, status: str, reason: str, sampled: int, kept: int, seconds: float) -> dict:
    return {**_provenance(item), "status": status, "reason": reason, "frames_sampled": sampled,
            "faces_kept": kept, "seconds": round(seconds, 4)}


@dataclass(frozen=True)
class FaceCrop:
    """One face of one sampled frame: its box in source-video pixels and its square crop."""

    frame_index: int
    timestamp: float
    face_index: int
    box: Box  # in source-video pixels
    crop: np.ndarray  # BGR uint8, settings.size square


def face_crops(path: str | Path, settings: PrepareSettings, *, on_frame=None) -> Iterator[FaceCrop]:
    """Sample frames, detect faces and cut crops exactly as `prepare` does; `predict` uses the same path.

    `on_frame(frame)` is called for every sampled frame, faces or not. Raises InputError for unusable input.
    """
    detector = _detector(settings.detector)
    for frame in sample_frames(path, fps=settings.fps, frames=settings.frames, max_side=settings.max_side):
        if on_frame:
            on_frame(frame)
        boxes = [b for b in detector.detect(frame.image) if max(b.w, b.h) / frame.scale >= settings.min_face]
        if settings.faces == "largest" and boxes:
            boxes = [max(boxes, key=lambda b: b.area)]
        for k, box in enumerate(boxes):
            yield FaceCrop(frame.index, round(frame.timestamp, 6), k, box.scaled(1.0 / frame.scale),
                           square_crop(frame.image, box, margin=settings.margin, size=settings.size))


def _crop_faces(item: VideoItem, settings: PrepareSettings, scratch: Path) -> tuple[list[dict], int]:
    """Sample, detect and crop; crops go into `scratch`. Returns (manifest rows, frames sampled)."""
    import cv2

    rows, sampled = [], 0

    def count(_frame) -> None:
        nonlocal sampled
        sampled += 1

    for face in face_crops(item.path, settings, on_frame=count):
        name = f"{face.frame_index}_{face.face_index}.png"
        if not cv2.imwrite(str(scratch / name), face.crop):
            raise OSError(f"cannot write {scratch / name}")
        b = face.box
        rows.append({**_provenance(item), "frame_index": face.frame_index, "timestamp": face.timestamp,
                     "face_index": face.face_index, "x": b.x, "y": b.y, "w": b.w, "h": b.h, "score": b.score,
                     "crop_path": f"faces/{item.video_id}/{name}"})
    return rows, sampled


def process_video(item: VideoItem, settings: PrepareSettings, out: Path) -> dict:
    """Crop one input's faces into OUT/faces/<video_id>/ and commit its record; never raises for bad input.

    Returns the record: {"video": videos.parquet row, "faces": manifest rows, ...}.
    """
    start = time.perf_counter()
    final = out / "faces" / item.video_id
    scratch = final.with_name(final.name + ".partial")
    rows, sampled, status, reason = [], 0, "error", item.problem
    if not item.problem:
        try:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            rows, sampled = _crop_faces(item, settings, scratch)
            shutil.rmtree(final, ignore_errors=True)
            if rows:
                os.replace(scratch, final)
            status, reason = ("ok", "") if rows else ("no_face", f"no face found in {sampled} sampled frames")
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever one input breaks is that input's error
            rows, reason = [], one_line(exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    record = {"format": RECORD_FORMAT, "settings": settings.digest(), "input": _fingerprint(item),
              "video": _video_row(item, status, reason, sampled, len(rows), time.perf_counter() - start),
              "faces": rows}
    _atomic.write_text(_record_path(out, item.video_id), json.dumps(record))
    return record


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _process_star(args: tuple[VideoItem, PrepareSettings, Path]) -> dict:
    return process_video(*args)


# ---------------------------------------------------------------- the batch

def _load_record(out: Path, item: VideoItem, settings: PrepareSettings) -> dict | None:
    """The committed record for `item` if it was made with these settings from this very file."""
    try:
        record = json.loads(_record_path(out, item.video_id).read_text())
    except (OSError, ValueError):
        return None
    video = record.get("video", {})
    same = (record.get("format") == RECORD_FORMAT and record.get("settings") == settings.digest()
            and record.get("input") == _fingerprint(item) and video.get("video_id") == item.video_id
            and video.get("label") == item.label and video.get("group") == item.group)
    if same and video.get("status") == "ok" and not (out / "faces" / item.video_id).is_dir():
        return None  # crops deleted by hand: redo
    return record if same else None


def _run(todo: list[VideoItem], settings: PrepareSettings, out: Path, workers: int) -> Iterator[dict]:
    if workers <= 1 or len(todo) <= 1:
        _worker_init()
        for item in todo:
            yield process_video(item, settings, out)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_worker_init) as pool:
        pending, queue = set(), iter(todo)
        while True:
            for item in queue:  # keep a bounded number in flight: memory stays flat on huge collections
                pending.add(pool.submit(_process_star, (item, settings, out)))
                if len(pending) >= 4 * workers:
                    break
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("fakefinder", "av", "opencv-python-headless", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def prepare(src: str | Path, out: str | Path, *, settings: PrepareSettings | None = None,
            layout: Layout = "auto", labels: str | Path | None = None, dataset: str | None = None,
            workers: int | None = None, progress: bool = True) -> PrepareResult:
    """Turn the labelled collection at `src` into face crops and tables under `out`.

    Bad inputs become rows with a reason; the batch always finishes. Reruns resume.
    Raises UsageError for arguments that cannot work (missing SRC, OUT is a file, no labels, no weights).
    """
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    settings = settings or PrepareSettings()
    settings.validate()
    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if src.is_dir() and out.resolve() == src.resolve():
        raise UsageError("OUT must differ from SRC")
    collection = discover(src, layout=layout, labels=labels, dataset=dataset)
    _detector(settings.detector)  # fail fast (missing weights) before any work
    with _atomic.exclusive(out / STATE_DIR / "lock", "prepare"):
        _atomic.sweep_temporaries(_records_dir(out))  # records that a kill caught mid-write
        result = _prepare_locked(collection, out, settings, workers, progress, t0)
        info = {"src": str(src.resolve()), "layout": collection.layout, "dataset": result.dataset,
                "labels": str(Path(labels).resolve()) if labels else None,
                "settings": dataclasses.asdict(settings), "settings_digest": settings.digest(),
                "versions": _versions(), "started": started.isoformat(),
                "finished": datetime.now(timezone.utc).isoformat(),
                "counts": {"videos": result.videos, "ok": result.ok, "no_face": result.no_face,
                           "error": result.errors, "faces": result.faces, "reused": result.reused}}
        _atomic.write_text(out / PREPARE_INFO, json.dumps(info, indent=2) + "\n")
    return result


def _prepare_locked(collection: Collection, out: Path, settings: PrepareSettings, workers: int | None,
                    progress: bool, t0: float) -> PrepareResult:
    """Reuse what earlier runs committed, process the rest, rebuild the tables from all records."""
    from tqdm import tqdm

    items = collection.items
    counts = {"ok": 0, "no_face": 0, "error": 0}
    faces = reused = 0
    failures: list[tuple[str, str, str]] = []

    def tally(record: dict) -> None:
        nonlocal faces
        video = record["video"]
        counts[video["status"]] += 1
        faces += video["faces_kept"]
        if video["status"] != "ok":
            failures.append((video["source_path"], video["status"], video["reason"]))

    todo = []
    for item in items:
        record = _load_record(out, item, settings)
        if record is None:
            todo.append(item)
        else:
            reused += 1
            tally(record)
    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(items), initial=reused, unit="video", disable=not progress, file=sys.stderr,
              desc="prepare") as bar:
        bar.set_postfix(faces=faces, errors=counts["error"])
        for record in _run(todo, settings, out, workers):
            tally(record)
            bar.update(1)
            bar.set_postfix(faces=faces, errors=counts["error"])

    def records() -> Iterator[dict]:
        for item in items:
            yield json.loads(_record_path(out, item.video_id).read_text())

    write_table(out / VIDEOS, VIDEOS_SCHEMA, ([r["video"]] for r in records()))
    write_table(out / MANIFEST, MANIFEST_SCHEMA, (r["faces"] for r in records()))
    return PrepareResult(out=out, layout=collection.layout, dataset=collection.dataset, videos=len(items),
                         ok=counts["ok"], no_face=counts["no_face"], errors=counts["error"], faces=faces,
                         reused=reused, seconds=time.perf_counter() - t0, failures=tuple(sorted(failures)))
