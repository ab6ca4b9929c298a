"""Frames sampled, faces detected and square crops cut: the one path that `prepare` and `predict` share, so that a
detector sees faces framed as its training data was. Imports nothing of the tables `prepare` writes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import InputLimits, PrepareSettings
from .crops import square_crop
from .faces import Box, FaceDetector, create_face_detector
from .frames import sample_frames

# Face detectors hold OpenCV networks that one thread at a time may run, and cost tens of milliseconds to load:
# each is lent to one caller at a time and kept for the next (a verdict's decoding thread is new every time).
_idle: dict[str, list[FaceDetector]] = {}
_idle_lock = threading.Lock()


@contextlib.contextmanager
def borrowed_detector(name: str) -> Iterator[FaceDetector]:
    with _idle_lock:
        spare = _idle.get(name)
        detector = spare.pop() if spare else None
    if detector is None:
        detector = create_face_detector(name)
    try:
        yield detector
    finally:
        with _idle_lock:
            _idle.setdefault(name, []).append(detector)


@dataclass(frozen=True)
class FaceCrop:
    """One face of one sampled frame: its box in source-video pixels and its square crop."""

    frame_index: int
    timestamp: float
    face_index: int
    box: Box  # in source-video pixels
    crop: np.ndarray  # BGR uint8, settings.size square


def face_crops(path: str | Path, settings: PrepareSettings, *, on_frame=None,
               limits: InputLimits | None = None) -> Iterator[FaceCrop]:
    """Sample frames, detect faces and cut crops exactly as `prepare` does; `predict` uses the same path.

    `on_frame(frame)` is called for every sampled frame, faces or not. Raises InputError for unusable input.
    """
    with borrowed_detector(settings.detector) as detector:
        for frame in sample_frames(path, fps=settings.fps, frames=settings.frames, max_side=settings.max_side,
                                   tolerance=settings.tolerance, limits=limits):
            if on_frame:
                on_frame(frame)
            boxes = [b for b in detector.detect(frame.image) if max(b.w, b.h) / frame.scale >= settings.min_face]
            if settings.faces == "largest" and boxes:
                boxes = [max(boxes, key=lambda b: b.area)]
            for k, box in enumerate(boxes):
                yield FaceCrop(frame.index, round(frame.timestamp, 6), k, box.scaled(1.0 / frame.scale),
                               square_crop(frame.image, box, margin=settings.margin, size=settings.size,
                                           align=settings.align))
