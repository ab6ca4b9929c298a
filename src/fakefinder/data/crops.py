"""Square face crops with a margin, padded with black where the square leaves the frame."""

from __future__ import annotations

import numpy as np

from .faces import Box


def square_crop(image: np.ndarray, box: Box, *, margin: float, size: int) -> np.ndarray:
    """The square around `box` grown by `margin` of its long side on every side, resized to `size`.

    margin 0 is the tight square of the box (Haar boxes are square: the reference's crop).
    """
    import cv2

    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
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
