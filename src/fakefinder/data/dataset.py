"""The prepared dataset as one public, frozen type: what every stage after `prepare` reads.

Every row carries its video, source group, label, method and dataset as data, so splits and video-level metrics
never parse paths. Videos in which no face was found have no crop but are still part of the dataset: splits
place them and metrics count them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import PrepareSettings, VideoRule
from ..errors import UsageError, one_line
from .manifest import MANIFEST, PREPARE_INFO, VIDEOS


@dataclass(frozen=True)
class NoFaceVideos:
    video_ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.video_ids)


@dataclass(frozen=True)
class PreparedDataset:
    """A folder made by `prepare`: one row per face crop (arrays of equal length), and the faceless videos."""

    root: Path
    name: str
    video_ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray  # int64, 1 = FAKE
    methods: np.ndarray
    crop_paths: np.ndarray  # relative to `root`, POSIX: what split files and prediction tables record
    no_face: NoFaceVideos
    manifest_digest: str  # sha256 prefix of manifest.parquet: which data a model was trained on
    settings: PrepareSettings | None  # how the crops were made (None for folders made by hand)
    origins: np.ndarray | None = None  # per row, the row of the real crop a pseudo-fake was made from, else -1
    # landmarks.npz as `landmarks` first read it (None: not yet); a dataset made from this one by
    # `dataclasses.replace` (pseudo-fakes added) keeps it
    _landmarks: dict | None = field(default=None, repr=False, compare=False)
    _tracks: dict | None = field(default=None, repr=False, compare=False)  # crop path -> track, read by `tracks`
    _manifest_faces: dict | None = field(default=None, repr=False, compare=False)  # read by `_faces`

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def margin(self) -> float:
        """Around the face box in every crop: as prepared, else prepare's default (crops made by hand)."""
        return (self.settings or PrepareSettings()).margin

    def landmarks(self, rows: np.ndarray, *, progress=None) -> np.ndarray:
        """The face meshes of these rows' crops (data.landmarks.stored_landmarks: NaN where none was found), measured
        where the folder's landmarks.npz lacks them; the file is read once, by the first call."""
        from .landmarks import read_landmarks, stored_landmarks

        if self._landmarks is None:
            object.__setattr__(self, "_landmarks", read_landmarks(self.root,
                                                                  side=self.settings.size if self.settings else None))
        return stored_landmarks(self.root, self.crop_paths[rows], progress=progress, known=self._landmarks)

    def sources(self, video_ids) -> list:
        """The source group of each of these videos (with a face): the independent unit evidence is counted in."""
        group = dict(zip(self.video_ids, self.groups))
        return [group[v] for v in video_ids]

    def face_fill(self, *, sample: int = 300) -> float | None:
        """How much of their crops the faces fill: data.landmarks.median_fill of up to `sample` crops spread over the
        rows (pseudo-fakes, framed as their reals, left out); None for crops made by hand or without the face mesh
        model (not measured)."""
        from .landmarks import face_mesh_installed, median_fill

        own = np.arange(len(self)) if self.origins is None else np.flatnonzero(self.origins < 0)
        if self.settings is None or len(own) == 0 or not face_mesh_installed():
            return None
        picked = own[np.unique(np.linspace(0, len(own) - 1, min(sample, len(own))).astype(int))]
        return median_fill(self.landmarks(picked), self.settings.size)

    def pair_keys(self) -> np.ndarray:
        """Per row, a key it shares with the crops of the same frame and face in the other videos of its source group
        (a fake's face and its original's in the frame it was made from): which crops to batch side by side. Read off
        the manifest, so that a face missed in one video leaves the others' later frames paired right; rows it lacks
        (pseudo-fakes) each have a key of their own."""
        faces = self._faces()
        group = np.unique(self.groups, return_inverse=True)[1].ravel()
        places = np.asarray([faces[c][1:3] if c in faces else (-1, -1 - row) for row, c in enumerate(self.crop_paths)],
                            dtype=np.int64).reshape(-1, 2)
        return np.unique(np.column_stack([group, places]), axis=0, return_inverse=True)[1].ravel()

    def tracks(self) -> np.ndarray:
        """Per row, its face's track in its video (data.tracks.link_tracks over the manifest's boxes, frame by frame,
        as `predict` links a video's faces); 0 for rows the manifest lacks (pseudo-fakes, one face each)."""
        from .tracks import link_tracks

        if self._tracks is None:
            frames: dict[str, dict[int, list[tuple[int, str, tuple]]]] = {}
            for c, (v, f, k, box) in self._faces().items():
                frames.setdefault(v, {}).setdefault(f, []).append((k, c, box))
            track: dict[str, int] = {}
            for by_frame in frames.values():
                ordered = [sorted(faces) for _, faces in sorted(by_frame.items())]
                for faces, ids in zip(ordered, link_tracks([[box for _, _, box in faces] for faces in ordered])):
                    track.update((c, i) for (_, c, _), i in zip(faces, ids))
            object.__setattr__(self, "_tracks", track)
        return np.asarray([self._tracks.get(c, 0) for c in self.crop_paths], dtype=np.int64)

    def _faces(self) -> dict[str, tuple[str, int, int, tuple]]:
        """crop path -> (video, frame index, face index, box) of every crop the manifest lists, read once."""
        if self._manifest_faces is None:
            names = ["video_id", "frame_index", "face_index", "x", "y", "w", "h", "crop_path"]
            t = _read(self.root / MANIFEST, names)
            object.__setattr__(self, "_manifest_faces", {c: (v, int(f or 0), int(k or 0), (x, y, w, h))
                                                         for v, f, k, x, y, w, h, c in zip(*(t[n] for n in names))})
        return self._manifest_faces

    def videos(self, rows: np.ndarray, p, rule: VideoRule) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(video ids, labels, scores) of the videos of these rows, whose faces scored `p`: metrics.video_scores
        over their tracks, as `predict` scores a video."""
        from ..metrics import video_scores

        return video_scores(self.video_ids[rows], self.labels[rows], p, rule=rule, tracks=self.tracks()[rows])

    @property
    def crop_files(self) -> np.ndarray:
        return np.asarray([str(self.root / p) for p in self.crop_paths], dtype=object)

    def units(self, by: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per crop row, then per faceless video: (video ids, groups, split units) for a split `by`."""
        ids = np.concatenate([self.video_ids, self.no_face.video_ids])
        groups = np.concatenate([self.groups, self.no_face.groups])
        units = {"source": groups, "video": ids,
                 "frame": np.concatenate([self.crop_paths, self.no_face.video_ids])}
        if by not in units:
            raise UsageError(f"unknown split {by!r} (choose from {', '.join(units)})")
        return ids, groups, units[by]

    @property
    def all_labels(self) -> np.ndarray:
        return np.concatenate([self.labels, self.no_face.labels.astype(np.int64)])


def _read(path: Path, columns: list[str]) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path}: unreadable ({one_line(exc, limit=160, typed=False)}); rerun `fakefinder prepare` "
                         "to rebuild it") from None
    return table.to_pydict()


def load_dataset(data: str | Path, *, need_both_classes: bool = True) -> PreparedDataset:
    """Raises UsageError when the folder has no (readable) manifest, no crops, or (for training) one class."""
    root = Path(data)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise UsageError(f"{root}: no manifest.parquet (run `fakefinder prepare SRC {root}` first)")
    t = _read(manifest, ["dataset", "video_id", "group", "label", "crop_path", "method"])
    if not t["video_id"]:
        raise UsageError(f"{manifest}: no face crops")
    labels = np.asarray(t["label"], dtype=np.int64)
    if need_both_classes and len(np.unique(labels)) < 2:
        raise UsageError(f"{manifest}: one class only (all {'FAKE' if labels[0] else 'REAL'}); need both")
    no_face = NoFaceVideos(*(np.asarray([], dtype=object),) * 2, np.asarray([], dtype=np.int64))
    if (root / VIDEOS).is_file():
        v = _read(root / VIDEOS, ["video_id", "group", "label", "status"])
        rows = [(i, g, y) for i, g, y, s in zip(v["video_id"], v["group"], v["label"], v["status"]) if s == "no_face"]
        if rows:
            ids, groups, ys = zip(*rows)
            no_face = NoFaceVideos(np.asarray(ids, dtype=object), np.asarray(groups, dtype=object),
                                   np.asarray(ys, dtype=np.int64))
    return PreparedDataset(root, t["dataset"][0], np.asarray(t["video_id"], dtype=object),
                           np.asarray(t["group"], dtype=object), labels,
                           np.asarray([m or "" for m in t["method"]], dtype=object),
                           np.asarray(t["crop_path"], dtype=object), no_face,
                           hashlib.sha256(manifest.read_bytes()).hexdigest()[:16], _settings(root))


def _settings(root: Path) -> PrepareSettings | None:
    try:
        info = json.loads((root / PREPARE_INFO).read_text())
        return PrepareSettings.recorded(info["settings"])
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
