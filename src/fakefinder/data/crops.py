"""Square face crops with a margin, padded with black where the square leaves the frame; upright (the eyes level)
when aligned; and crops read back from their files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import _files
from ..errors import UsageError
from .faces import Box


def eye_angle(box: Box) -> float | None:
    """Degrees the line from the right eye to the left eye turns from level (image coordinates), or None when the
    detector gives no eyes."""
    if len(box.landmarks) < 2:
        return None
    (rx, ry), (lx, ly) = box.landmarks[0], box.landmarks[1]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def crop_scale(margin: float) -> float:
    """A crop's side over its face box's long side when cut with `margin` (the one statement of the geometry)."""
    return 1 + 2 * margin


def scaled_margin(margin: float, factor: float) -> float:
    """The margin whose crops are `factor` times as wide as those cut with `margin` around the same box."""
    return (crop_scale(margin) * factor - 1) / 2


def square_crop(image: np.ndarray, box: Box, *, margin: float, size: int, align: bool = False) -> np.ndarray:
    """The square around `box` grown by `margin` of its long side on every side, resized to `size`; with `align`,
    turned about the box's centre so that the eyes are level (where the detector found them).

    margin 0 is the tight square of the box (Haar boxes are square: the reference's crop).
    """
    import cv2

    angle = eye_angle(box) if align else None
    if angle:
        # A square wide enough for any turn, shrunk as the plain crop is, then turned and its middle cut.
        wide = square_crop(image, box, margin=scaled_margin(margin, math.sqrt(2)),
                           size=math.ceil(size * math.sqrt(2)))
        middle = wide.shape[0] / 2
        turned = cv2.warpAffine(wide, cv2.getRotationMatrix2D((middle, middle), angle, 1.0), wide.shape[:2][::-1],
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        start = round(middle - size / 2)
        return np.ascontiguousarray(turned[start:start + size, start:start + size])
    side = max(box.w, box.h) * crop_scale(margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    s = max(1, round(side))
    h, w = image.shape[:2]
    crop = np.zeros((s, s, 3), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def read_crop(path: str | Path) -> np.ndarray:
    """A face crop as BGR uint8. Raises UsageError for a deleted or damaged one (the dataset needs repair)."""
    image = _files.read_image(path)
    if image is None:
        raise UsageError(f"{path}: cannot read face crop (deleted or damaged); rerun `fakefinder prepare` to redo it")
    return image


def load_crops(paths: Sequence[str | Path]) -> list[np.ndarray]:
    return [read_crop(p) for p in paths]
