"""`prepare`: a labelled collection of videos -> square face crops with provenance, resumably.

Each input is handled by `process_video`, a function of (input, settings) alone that writes its crops to a
scratch folder, renames it into place, then commits a small JSON record atomically; an executor (this process,
local workers, or a Ray cluster) runs it over the inputs as a stream. A rerun reuses every record made with the
same settings from the same file whose crops are all still there, and retries inputs that failed (a full disk
is not a verdict on the video); the tables are rebuilt from the records at the end, so killing the process at
any moment loses at most the inputs in flight and never corrupts what is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import _files
from ..config import InputLimits, PrepareSettings
from ..errors import UsageError, one_line
from ..hardware import Compute, single_threaded_opencv
from ..progress import ProgressCallback, emit
from .collection import Collection, CollectionOptions, VideoItem, discover
from .facecrops import FaceCrop, borrowed_detector, face_crops
from .manifest import (
    MANIFEST,
    MANIFEST_SCHEMA,
    PREPARE_INFO,
    STATE_DIR,
    VIDEOS,
    VIDEOS_SCHEMA,
    crops_folder,
    read_column,
    write_table,
)

__all__ = ["PrepareSettings", "PrepareResult", "prepare", "process_video", "face_crops", "FaceCrop"]

RECORD_FORMAT = 3  # 2: frames turned upright; 3: crops in faces/<slug>-<digest>/ (no nesting, bounded length)


def settings_digest(settings: PrepareSettings) -> str:
    """Part of every record's key, so changing a setting redoes the work."""
    return _files.json_digest([RECORD_FORMAT, settings.digest_fields()])


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
    executor: str = "local"

    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST

    @property
    def videos_path(self) -> Path:
        return self.out / VIDEOS

    def summary(self) -> str:
        lines = [f"prepared {self.videos} inputs of dataset '{self.dataset}' ({self.layout} layout) into "
                 f"{self.out} in {self.seconds:.1f} s ({self.executor})",
                 f"  ok {self.ok}, no face {self.no_face}, errors {self.errors} "
                 f"({self.reused} reused from an earlier run); {self.faces} face crops",
                 f"  {self.manifest_path}"]
        lines += [f"  {status:8} {path}: {reason}" for path, status, reason in self.failures]
        return "\n".join(lines)


# ---------------------------------------------------------------- one input (runs wherever the executor runs it)

def _fingerprint(item: VideoItem) -> list[int] | None:
    if item.path is None:
        return None
    try:
        st = item.path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _records_dir(out: Path) -> Path:
    return out / STATE_DIR / "records"


def _record_path(out: Path, video_id: str) -> Path:
    return _records_dir(out) / f"{hashlib.sha1(video_id.encode('utf-8', 'surrogateescape')).hexdigest()}.json"


def _provenance(item: VideoItem) -> dict:
    """The columns that every row of both tables carries about its input."""
    return {"dataset": item.dataset, "video_id": item.video_id, "source_path": item.source_path,
            "label": item.label, "group": item.group, "method": item.method}


def _video_row(item: VideoItem, status: str, reason: str, sampled: int, kept: int, seconds: float) -> dict:
    return {**_provenance(item), "status": status, "reason": reason, "frames_sampled": sampled,
            "faces_kept": kept, "seconds": round(seconds, 4)}


def _crop_faces(item: VideoItem, settings: PrepareSettings, scratch: Path, folder: str,
                limits: InputLimits | None) -> tuple[list[dict], int]:
    """Sample, detect and crop; crops go into `scratch`. Returns (manifest rows, frames sampled)."""
    rows, sampled = [], 0

    def count(_frame) -> None:
        nonlocal sampled
        sampled += 1

    for face in face_crops(item.path, settings, on_frame=count, limits=limits):
        name = f"{face.frame_index}_{face.face_index}.png"
        (scratch / name).write_bytes(_files.encode_image(face.crop))  # a scratch folder: moved into place whole
        b = face.box
        rows.append({**_provenance(item), "frame_index": face.frame_index, "timestamp": face.timestamp,
                     "face_index": face.face_index, "x": b.x, "y": b.y, "w": b.w, "h": b.h, "score": b.score,
                     "crop_path": f"{folder}/{name}"})
    return rows, sampled


def process_video(item: VideoItem, settings: PrepareSettings, out: Path, limits: InputLimits | None = None) -> dict:
    """Crop one input's faces into OUT/faces/<folder>/ and commit its record; never raises for bad input.

    Returns the record: {"video": videos.parquet row, "faces": manifest rows, ...}.
    """
    start = time.perf_counter()
    folder = crops_folder(item.video_id)
    final = out / folder
    # Each attempt its own scratch folder: a task retried elsewhere while the first attempt still runs
    # (a cluster node cut off, not dead) never writes into another attempt's files.
    scratch = final.with_name(f"{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    rows, sampled, status, reason = [], 0, "error", item.problem
    if not item.problem:
        try:
            scratch.mkdir(parents=True)
            rows, sampled = _crop_faces(item, settings, scratch, folder, limits)
            shutil.rmtree(final, ignore_errors=True)
            if rows:
                try:
                    os.replace(scratch, final)
                except OSError:  # another attempt put the same crops in place a moment ago
                    shutil.rmtree(final, ignore_errors=True)
                    os.replace(scratch, final)
            status, reason = ("ok", "") if rows else ("no_face", f"no face found in {sampled} sampled frames")
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever one input breaks is that input's error
            rows, reason = [], one_line(exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    record = {"format": RECORD_FORMAT, "settings": settings_digest(settings), "input": _fingerprint(item),
              "video": _video_row(item, status, reason, sampled, len(rows), time.perf_counter() - start),
              "faces": rows}
    _files.write_text(_record_path(out, item.video_id), json.dumps(record))
    return record


@dataclass(frozen=True)
class _PrepareVideo:
    """`process_video` with its settings bound: picklable, for any executor."""

    settings: PrepareSettings
    out: str
    limits: InputLimits | None = None

    def __call__(self, item: VideoItem) -> dict:
        return process_video(item, self.settings, Path(self.out), self.limits)


# ---------------------------------------------------------------- the batch

def _load_record(out: Path, item: VideoItem, settings: PrepareSettings) -> dict | None:
    """The committed record for `item`, if it was made with these settings from this very file, succeeded or
    found no face, and every crop it lists is still there."""
    try:
        record = json.loads(_record_path(out, item.video_id).read_text())
        video = record["video"]
        same = (record.get("format") == RECORD_FORMAT and record.get("settings") == settings_digest(settings)
                and record.get("input") == _fingerprint(item) and video.get("video_id") == item.video_id
                and video.get("label") == item.label and video.get("group") == item.group)
        if not same or video.get("status") == "error":
            return None  # changed, or failed: try again (a full disk is not a verdict on the video)
        if not all((out / row["crop_path"]).is_file() for row in record["faces"]):
            return None  # crops deleted since: redo
        return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .._version import __version__

    out = {"python": sys.version.split()[0], "fakefinder": __version__}  # this code's, whatever pip installed
    for name in ("av", "opencv-python-headless", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _check_writable(out: Path) -> None:
    try:
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / STATE_DIR / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{out}: cannot write there ({exc.strerror or type(exc).__name__})") from None


def prepare(src: str | Path, out: str | Path, *, settings: PrepareSettings | None = None,
            collection: CollectionOptions | None = None, compute: Compute | None = None,
            limits: InputLimits | None = None, progress: ProgressCallback | None = None) -> PrepareResult:
    """Turn the labelled collection at `src` (read as `collection` says) into face crops and tables under `out`.

    Bad inputs (those over `limits` too) become rows with a reason; the batch always finishes. Reruns resume.
    `compute.executor` runs the inputs (default: `compute.processes` local processes, all cores). Raises
    UsageError for arguments that cannot work (missing SRC, OUT is a file or cannot be written, no labels, no
    detector weights).
    """
    from ..scale.executors import LocalExecutor

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    settings, reading, compute = settings or PrepareSettings(), collection or CollectionOptions(), compute or Compute()
    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if src.is_dir() and out.resolve() == src.resolve():
        raise UsageError("OUT must differ from SRC")
    found = discover(src, layout=reading.layout, labels=reading.labels, dataset=reading.dataset)
    with borrowed_detector(settings.detector):  # fail fast (missing weights) before any work
        pass
    if settings.landmarks:
        from .landmarks import face_mesh_model_path

        try:
            face_mesh_model_path()
        except UsageError as exc:
            raise UsageError(f"{exc}, or give --no-landmarks") from None
    _check_writable(out)
    executor = compute.executor or LocalExecutor(compute.processes, init=single_threaded_opencv)
    with _files.exclusive(out / STATE_DIR / "lock", "prepare"):
        _files.sweep_temporaries(_records_dir(out))  # records that a kill caught mid-write
        for scratch in (out / "faces").glob("*.partial-*"):  # crops of attempts that a kill stopped
            shutil.rmtree(scratch, ignore_errors=True)
        result = _prepare_locked(found, out, _PrepareVideo(settings, str(out), limits), executor, progress, t0)
        if settings.landmarks:
            from .landmarks import stored_landmarks

            _files.sweep_temporaries(out)  # a mesh store that a kill caught mid-write
            stored_landmarks(out, read_column(out / MANIFEST, "crop_path"), progress=progress, prune=True)
        info = {"src": str(src.resolve()), "layout": found.layout, "dataset": result.dataset,
                "labels": str(Path(reading.labels).resolve()) if reading.labels else None,
                "settings": dataclasses.asdict(settings), "settings_digest": settings_digest(settings),
                "versions": _versions(), "executor": executor.name, "started": started.isoformat(),
                "finished": datetime.now(timezone.utc).isoformat(),
                "counts": {"videos": result.videos, "ok": result.ok, "no_face": result.no_face,
                           "error": result.errors, "faces": result.faces, "reused": result.reused}}
        _files.write_text(out / PREPARE_INFO, json.dumps(info, indent=2) + "\n")
    return result


def _prepare_locked(collection: Collection, out: Path, job: _PrepareVideo, executor,
                    progress: ProgressCallback | None, t0: float) -> PrepareResult:
    """Reuse what earlier runs committed, process the rest, rebuild the tables from all records."""
    items, settings = collection.items, job.settings
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

    def todo() -> Iterator[VideoItem]:  # a stream: records are read as the executor asks for work
        nonlocal reused
        for item in items:
            record = _load_record(out, item, settings)
            if record is None:
                yield item
            else:
                reused += 1
                tally(record)

    done = 0
    for record in executor.map_unordered(job, todo()):
        tally(record)
        done += 1
        video = record["video"]
        emit(progress, "prepare", done + reused, len(items), "video", faces=faces, errors=counts["error"],
             message=f"{video['source_path']}: {video['reason']}" if video["status"] == "error" else "")
    emit(progress, "prepare", len(items), len(items), "video", faces=faces, errors=counts["error"])

    def records() -> Iterator[dict]:
        for item in items:
            yield json.loads(_record_path(out, item.video_id).read_text())

    write_table(out / VIDEOS, VIDEOS_SCHEMA, ([r["video"]] for r in records()))
    write_table(out / MANIFEST, MANIFEST_SCHEMA, (r["faces"] for r in records()))
    return PrepareResult(out=out, layout=collection.layout, dataset=collection.dataset, videos=len(items),
                         ok=counts["ok"], no_face=counts["no_face"], errors=counts["error"], faces=faces,
                         reused=reused, seconds=time.perf_counter() - t0, failures=tuple(sorted(failures)),
                         executor=executor.name)
