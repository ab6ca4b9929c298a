"""A 468-point face mesh on a face crop: MediaPipe's `face_landmark.tflite` (Apache-2.0), from the mediapipe wheel
(installed without its dependencies), run by OpenCV's DNN module, so no TensorFlow. About 2 ms a crop on a CPU.

The points outline the face (its oval, eyes, brows, nose, lips), where a face swap blends one face into another:
self-blended pseudo-fakes (`training.pseudofakes`) take their blending masks from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._packages import package_file
from ..errors import UsageError
from ..metrics import sigmoid

POINTS = 468
INPUT = 192  # the model's input side: the crop is resized to it
# Indices into the mesh (MediaPipe's canonical face model) that tests and masks name.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, NOSE_TIP, UPPER_LIP, CHIN, FOREHEAD = 33, 263, 1, 13, 152, 10


def face_mesh_model_path() -> Path:
    path = package_file("mediapipe", "modules", "face_landmark", "face_landmark.tflite")
    if path is not None:
        return path
    raise UsageError("face mesh weights not found: run `pip install --no-deps mediapipe==0.10.21`")


class FaceMesh:
    """Landmarks of the face that fills a crop (as `prepare` cuts them: the face centred, some margin around it).
    One instance per thread: an OpenCV network runs one input at a time."""

    # Faces score above 0.999, textures a square crop of a photo without a face up to about 0.6.
    def __init__(self, *, min_presence: float = 0.9, model: str | Path | None = None) -> None:
        import cv2

        self._net = cv2.dnn.readNetFromTFLite(str(model or face_mesh_model_path()))
        self._outputs = self._net.getUnconnectedOutLayersNames()
        self.min_presence = min_presence

    def landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        """(468, 2) float32 x, y in the crop's pixels, or None when the model sees no face in it."""
        import cv2

        h, w = crop.shape[:2]
        blob = cv2.dnn.blobFromImage(crop, scalefactor=1 / 255.0, size=(INPUT, INPUT), swapRB=True)
        self._net.setInput(blob)
        out = self._net.forward(self._outputs)
        points = next(o for o in out if o.size == POINTS * 3).reshape(POINTS, 3)[:, :2]
        presence = float(sigmoid(np.asarray(next(o for o in out if o.size == 1)).ravel())[0])
        if presence < self.min_presence:
            return None
        return (points * np.array([w / INPUT, h / INPUT], dtype=np.float32)).astype(np.float32)
