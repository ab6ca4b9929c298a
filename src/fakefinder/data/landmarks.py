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
from .crops import scaled_margin

POINTS = 468
INPUT = 192  # the model's input side: the crop is resized to it
# Indices into the mesh (MediaPipe's canonical face model) that tests and masks name.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, NOSE_TIP, UPPER_LIP, CHIN, FOREHEAD = 33, 263, 1, 13, 152, 10


def _mesh_file() -> Path | None:
    return package_file("mediapipe", "modules", "face_landmark", "face_landmark.tflite")


def face_mesh_installed() -> bool:
    return _mesh_file() is not None


def face_mesh_model_path() -> Path:
    path = _mesh_file()
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


LANDMARKS = "landmarks.npz"  # in a prepared folder, beside manifest.parquet: every crop's mesh
SAVE_EVERY = 5000  # meshes measured between saves


def _stamp(path: Path) -> str:
    """What a crop's mesh depends on: its file (a rerun with other settings rewrites crops at the same paths)."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_landmarks(root: str | Path) -> dict[str, np.ndarray]:
    """The meshes `root/landmarks.npz` holds, by crop key (see `stored_landmarks`); none when it is missing or
    damaged (they are measured again)."""
    import zipfile

    store = Path(root) / LANDMARKS
    if store.is_file():
        try:
            with np.load(store) as z:
                return dict(zip(z["keys"].tolist(), z["points"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    return {}


def stored_landmarks(root: str | Path, crop_paths, *, progress=None, prune: bool = False,
                     known: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(n, 468, 2) float32 meshes of the crops at `crop_paths` (relative to `root`), in each crop's pixels; NaN where
    the mesh found no face or the crop cannot be read (recorded, never fatal). Read from `root/landmarks.npz` (or
    from `known`, what `read_landmarks` read from it before, kept up to date here: for a caller that asks more than
    once, `PreparedDataset.landmarks`); the crops it lacks are measured and the file rewritten atomically, so each
    crop's mesh is computed once. `prune` (for `prepare`, which holds the folder's lock) keeps only these crops'
    meshes. A folder that cannot be written (shared, read-only) still gets its meshes, measured again next time.
    Raises UsageError when the mesh model is not installed and a mesh is missing."""
    import io

    from .. import _files
    from ..progress import emit

    root = Path(root)
    keys = [f"{p}|{_stamp(root / p)}" for p in crop_paths]
    known = read_landmarks(root) if known is None else known
    store = root / LANDMARKS
    missing = [k for k in dict.fromkeys(keys) if k not in known]
    changed = bool(missing)
    if prune:
        stale = set(known) - set(keys)
        changed |= bool(stale)
        for key in stale:
            del known[key]

    def save() -> None:  # otherwise every mesh known is kept: callers ask for some crops (a sample, the reals)
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.asarray(list(known)),
                 points=np.stack(list(known.values())).astype(np.float32) if known else np.zeros((0, POINTS, 2)))
        try:
            _files.write_bytes(store, buffer.getvalue())
        except OSError:
            pass  # a folder we may not write: the meshes are returned all the same

    mesh = None
    emit(progress, "landmarks", 0, len(missing), "crop")
    for done, key in enumerate(missing, 1):
        image = _files.read_image(root / key.rsplit("|", 1)[0])
        mesh = mesh or FaceMesh()
        points = mesh.landmarks(image) if image is not None else None
        known[key] = points if points is not None else np.full((POINTS, 2), np.nan, dtype=np.float32)
        emit(progress, "landmarks", done, len(missing), "crop")
        if done % SAVE_EVERY == 0:  # a stopped run keeps what it measured
            save()
    if changed:
        save()
    if not keys:
        return np.zeros((0, POINTS, 2), dtype=np.float32)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def face_fill(points: np.ndarray, side: int) -> float:
    """How much of a square crop the face fills: the mesh's sqrt(width x height) over the crop's side. Framing in
    one number: a detector trained on one fill meets faces of another as a change of scale."""
    width, height = np.ptp(points[:, 0]), np.ptp(points[:, 1])
    return float(np.sqrt(width * height) / side)


def median_fill(meshes: np.ndarray, side: int) -> float | None:
    """The median face_fill of the crops whose `meshes` (as `stored_landmarks` gives them) found a face; None when
    none did."""
    fills = [face_fill(p, side) for p in meshes if not np.isnan(p).any()]
    return float(np.median(fills)) if fills else None


def margin_for_fill(fill: float, margin: float, wanted: float) -> float:
    """The margin that makes crops cut with `margin`, whose face fills `fill`, fill `wanted` instead (a crop's side
    is the box's times crops.crop_scale(margin))."""
    return max(0.0, scaled_margin(margin, fill / wanted))
