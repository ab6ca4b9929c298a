"""On-the-fly augmentation like the reference's Keras ImageDataGenerator: rotation 40 degrees, width and
height shift 0.2, shear 0.2 (degrees, as Keras reads it), zoom 0.8-1.2, horizontal flip, nearest fill."""

from __future__ import annotations

import math

import numpy as np


def augment(image: np.ndarray, rng: np.random.Generator, *, rotation: float = 40.0, shift: float = 0.2,
            shear: float = 0.2, zoom: float = 0.2, flip: bool = True) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    angle = math.radians(rng.uniform(-rotation, rotation))
    sh = math.radians(rng.uniform(-shear, shear))
    zx, zy = rng.uniform(1 - zoom, 1 + zoom, 2)
    tx, ty = rng.uniform(-shift, shift) * w, rng.uniform(-shift, shift) * h
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shr = np.array([[1, -math.sin(sh)], [0, math.cos(sh)]])
    m = rot @ shr @ np.diag([zx, zy])
    centre = np.array([w / 2, h / 2])
    affine = np.hstack([m, (centre - m @ centre + [tx, ty])[:, None]])
    out = cv2.warpAffine(image, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
