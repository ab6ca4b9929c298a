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
MESH_SLACK = 0.5  # a stored mesh may reach this fraction of its crop's side beyond it (a face cut by the crop's edge)
MAX_SIDE = 2048  # largest crop side prepare writes (PrepareSettings.size): the bound where the side is not known


def _stamp(path: Path) -> str:
    """What a crop's mesh depends on: its file (a rerun with other settings rewrites crops at the same paths)."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def read_landmarks(root: str | Path, *, side: int | None = None) -> dict[str, np.ndarray]:
    """The meshes `root/landmarks.npz` holds, by crop key (see `stored_landmarks`); none when it is missing or
    damaged (they are measured again). Its arrays' shapes and types are read from their headers first: a file
    whose arrays are not (n,) keys and (n, 468, 2) floats, or claim more bytes than the file holds, counts as
    damaged. A mesh that is not finite (all NaN stays: no face was found) or lies outside the crop (of `side`
    pixels where given) by more than MESH_SLACK of it is left out, and measured again."""
    import zipfile

    store = Path(root) / LANDMARKS
    if not store.is_file():
        return {}
    try:
        with zipfile.ZipFile(store) as z:
            n = {name: _npy_rows(z, name, store.stat().st_size) for name in ("keys.npy", "points.npy")}
        if n["keys.npy"] != n["points.npy"]:
            return {}
        with np.load(store, allow_pickle=False) as z:
            keys, points = z["keys"], z["points"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}
    high = side * (1 + MESH_SLACK) if side else MAX_SIDE
    low = -side * MESH_SLACK if side else -MAX_SIDE
    known = {}
    for key, mesh in zip(keys.tolist(), points):
        if np.isnan(mesh).all() or (np.isfinite(mesh).all() and low <= mesh.min() and mesh.max() <= high):
            known[str(key)] = mesh.astype(np.float32)
    return known


def _npy_rows(z, name: str, file_size: int) -> int:
    """The row count of an array stored (not compressed) in an npz, from its header alone; raises ValueError for
    any other shape or type, or an array larger than the file."""
    info = z.getinfo(name)
    if info.compress_type != 0 or info.file_size > file_size:
        raise ValueError(f"{name}: compressed, or larger than its file")
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    want = (POINTS, 2) if name == "points.npy" else ()
    kind = "f" if name == "points.npy" else "U"
    if len(shape) != 1 + len(want) or tuple(shape[1:]) != want or dtype.kind != kind or dtype.hasobject:
        raise ValueError(f"{name}: {shape} {dtype}")
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
        raise ValueError(f"{name}: declares more than it holds")
    return int(shape[0])


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
