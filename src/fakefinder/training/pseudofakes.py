"""Self-blended pseudo-fakes (Shiohara and Yamasaki, CVPR 2022), written from the paper: a real face blended with a
perturbed copy of itself through a mask around the face, so that a detector learns what every face swap leaves
(a blending boundary, a colour and frequency mismatch inside it) rather than one generator's traces.

`self_blend` makes one; `with_pseudo_fakes` adds `blends` of them per real crop to a prepared dataset, made ahead
of training and kept beside the data (`DATA/.fakefinder/blends/<key>/`), so that a frozen base's features are
extracted and cached once, and a rerun reuses them. Each pseudo-fake is a video of its own (`<video>+self-blended`)
in its real's source group, so a split keeps a real face and its pseudo-fakes on one side.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from .. import _files
from ..config import InputLimits, PrepareSettings, TrainSettings
from ..data.crops import crop_scale
from ..data.landmarks import CHIN, FOREHEAD, NOSE_TIP
from ..data.manifest import PSEUDO_FAKE_METHOD
from ..errors import UsageError
from ..progress import ProgressCallback, emit
from .augment import hsv_changed

METHOD = PSEUDO_FAKE_METHOD
RATIOS = (0.25, 0.5, 0.75)  # blend ratios other than 1
# Regions of MediaPipe's 468-point face mesh, by point: the upper edges of the eyebrows, and the parts a mask may
# cover alone (each eye with its brow, the nose, the lips).
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
PARTS = ((33, 133, 159, 145, 246, 161, 160, 158, 157, 173, 153, 154, 155, 163, 144, 7, 70, 63, 105, 66, 107, 46, 53,
          52, 65, 55),
         (362, 263, 386, 374, 466, 388, 387, 385, 384, 398, 380, 381, 382, 390, 373, 249, 336, 296, 334, 293, 300, 276,
          283, 282, 295, 285),
         (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 129, 358, 48, 278, 64, 294, 219, 439),
         (61, 291, 0, 17, 37, 267, 84, 314, 40, 270, 91, 321, 185, 409, 146, 375))
VARIED = ("hull", "no forehead", "parts")
SHAPES = {"varied": VARIED, "varied-lower": (*VARIED, "lower")}  # what `--blend-mask` picks from, evenly
MAX_GRID_SEEDS = 32  # rows of one crop's grid in `blend` (a grid is seeds x 3 crops: 32 rows is 7000 px high at 224)


def face_side(shape: tuple[int, ...], margin: float) -> float:
    """The side of the face box in a square crop cut with `margin` around it (`square_crop`)."""
    return min(shape[:2]) / crop_scale(margin)


def hull_mask(shape: tuple[int, ...], landmarks: np.ndarray | None, margin: float, kind: str = "hull"
              ) -> np.ndarray:
    """float32 1 inside the face, 0 outside: the landmarks' convex hull (`kind` "hull"), the hull of the points
    below the eyebrows ("no forehead", as a 68-point detector's hull), the hulls of the eyes, nose and lips
    ("parts"), or the hull of the points from the nose tip down ("lower": mouth, cheeks and jaw, where reenactment
    changes a face); without landmarks (or without a full mesh for the other kinds) an ellipse where a frontal face
    sits in a crop cut with `margin` (forehead to chin, cheek to cheek)."""
    import cv2

    h, w = shape[:2]
    mask = np.zeros((h, w), dtype=np.float32)
    mesh = landmarks is not None and len(landmarks) > max(max(p) for p in PARTS)
    if landmarks is not None and (kind == "hull" or not mesh):
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1.0)
    elif landmarks is not None and kind in ("no forehead", "lower"):
        axis = landmarks[CHIN] - landmarks[FOREHEAD]  # the face's long axis
        depth = (landmarks - landmarks[FOREHEAD]) @ (axis / max(float(np.linalg.norm(axis)), 1e-6))
        below = landmarks[depth >= (depth[list(BROWS)].min() if kind == "no forehead" else depth[NOSE_TIP])]
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(below).astype(np.int32)), 1.0)
    elif landmarks is not None:
        for part in PARTS:
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks[list(part)]).astype(np.int32)), 1.0)
    else:
        side = face_side(shape, margin)
        cv2.ellipse(mask, (round(w / 2), round(h / 2 + 0.05 * side)), (round(0.4 * side), round(0.5 * side)), 0, 0,
                    360, 1.0, -1)
    return mask


def _deformed(mask: np.ndarray, rng: np.random.Generator, amount: float, side: float) -> np.ndarray:
    """The mask warped by a smooth random field (a coarse grid of displacements, interpolated), then eroded or
    dilated: the blending boundary never follows the landmarks exactly, as no generator's does."""
    import cv2

    h, w = mask.shape
    if amount > 0:
        grid = rng.uniform(-amount, amount, size=(2, 4, 4)).astype(np.float32) * side
        dx, dy = (cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) for g in grid)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mask = cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    k = int(rng.integers(0, max(1, round(0.06 * side)) + 1))
    if k > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = (cv2.erode if rng.random() < 0.5 else cv2.dilate)(mask, kernel)
    return mask


def _jittered(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask scaled (up to 5%), turned (up to 5 degrees) and shifted (up to 3% of the crop) about its centre."""
    import cv2

    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-5, 5)), 1 + float(rng.uniform(-0.05, 0.05)))
    m[:, 2] += rng.uniform(-0.03, 0.03, size=2) * np.array([w, h])
    return cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _perturbed(crop: np.ndarray, rng: np.random.Generator, s: TrainSettings, side: float) -> np.ndarray:
    """The face to paste: the crop changed in colour, frequency and (slightly) geometry."""
    import cv2

    c = s.blend_colour
    levels = np.arange(256, dtype=np.float32)[:, None]  # each channel's map of its own values: one table each
    levels = levels * (1 + rng.uniform(-c, c)) + rng.uniform(-c, c) * 255  # contrast, brightness
    levels = levels + rng.uniform(-c, c, size=3).astype(np.float32) * 255  # per-channel shift
    image = cv2.LUT(crop, np.clip(levels, 0, 255).astype(np.uint8)[:, None, :])
    hue = rng.uniform(-c, c) * 90
    saturation, value = 1 + rng.uniform(-c, c, size=2).astype(np.float32)
    image = hsv_changed(image, hue, saturation, value)
    if rng.random() < s.blend_frequency:
        kind = int(rng.integers(3))
        if kind == 0:
            image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 2.0)))
        elif kind == 1:
            soft = cv2.GaussianBlur(image, (0, 0), 1.5)
            image = cv2.addWeighted(image, 1 + float(rng.uniform(0.3, 1.0)), soft, -float(rng.uniform(0.3, 1.0)), 0)
        else:
            h, w = image.shape[:2]
            k = float(rng.uniform(0.3, 0.8))
            small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
            image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    g = s.blend_geometry
    if g > 0:
        h, w = image.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, 1 + float(rng.uniform(-g, g)))
        m[:, 2] += rng.uniform(-g, g, size=2) * np.array([w, h])
        image = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return image


def self_blend(crop: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator,
               settings: TrainSettings | None = None, *, margin: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A pseudo-fake of a BGR uint8 face crop and its blending mask (float32, 0 where the crop is untouched):
    equal to the crop wherever the mask is 0. The same `rng` state gives the same pixels."""
    import cv2

    s = settings or TrainSettings()
    side = face_side(crop.shape, margin)
    shapes = SHAPES.get(s.blend_mask)
    kind = "hull" if shapes is None else shapes[int(rng.integers(len(shapes)))]
    mask = hull_mask(crop.shape, landmarks, margin, kind)
    if shapes is not None:
        mask = _jittered(mask, rng)
    mask = _deformed(mask, rng, s.blend_deform, side)
    sigma = float(rng.uniform(0.02, max(0.02, s.blend_feather))) * side
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    peak = float(mask.max())
    if peak > 0:
        mask /= peak
    ratio = 1.0 if rng.random() < s.blend_full else float(rng.choice(RATIOS))
    mask = (mask * ratio).astype(np.float32)
    source = _perturbed(crop, rng, s, side)
    weight = mask[..., None]
    fake = crop.astype(np.float32) * (1 - weight) + source.astype(np.float32) * weight
    return np.clip(np.round(fake), 0, 255).astype(np.uint8), mask


def blend_grid(crop: np.ndarray, landmarks: np.ndarray | None, seeds: list[int],
               settings: TrainSettings | None = None, *, margin: float = 0.3) -> np.ndarray:
    """What a detector trained with `--fakes self-blended` sees: per seed, a row of real / mask / pseudo-fake (the
    mask drawn with the landmarks as dots)."""
    import cv2

    rows = []
    for seed in seeds:
        fake, mask = self_blend(crop, landmarks, np.random.default_rng(seed), settings, margin=margin)
        shown = cv2.cvtColor((mask * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        for x, y in (landmarks if landmarks is not None else ()):
            cv2.circle(shown, (round(float(x)), round(float(y))), 1, (0, 200, 0), -1)
        rows.append(np.hstack([crop, shown, fake]))
    return np.vstack(rows)


def blends_key(dataset, settings: TrainSettings) -> str:
    """What the pseudo-fakes of a dataset depend on: its crops, the blend settings, their number and the seed."""
    fields = {k: v for k, v in dataclasses.asdict(settings).items()
              if (k.startswith("blend") and k != "blend_map") or k == "seed"}  # the map is learnt, not drawn
    if fields["blend_mask"] == "hull":  # as before the setting existed: blends made then are found again
        del fields["blend_mask"]
    return _files.json_digest([dataset.manifest_digest, fields])


def with_pseudo_fakes(dataset, settings: TrainSettings, *, progress: ProgressCallback | None = None):
    """`dataset` with `settings.blends` self-blended pseudo-fakes per real crop (made now, or found from an earlier
    run); with `--fakes self-blended` its own fakes are left out, with `both` kept. The crops' face meshes come from
    the prepared folder (measured there now when `prepare` did not). Raises UsageError when it has no real crop."""
    import cv2

    from ..data.crops import read_crop
    from ..data.manifest import STATE_DIR

    reals = np.flatnonzero(dataset.labels == 0)
    if reals.size == 0:
        raise UsageError(f"{dataset.root}: no real face crops to make self-blended pseudo-fakes from")
    folder = dataset.root / STATE_DIR / "blends" / blends_key(dataset, settings)
    folder.mkdir(parents=True, exist_ok=True)
    meshes = dataset.landmarks(reals, progress=progress)
    paths, done = [], 0
    emit(progress, "pseudo-fakes", 0, len(reals), "crop")
    for i, landmarks in zip(reals, meshes):
        mine = [folder / f"{i}_{k}.png" for k in range(settings.blends)]
        if not all(p.is_file() for p in mine):
            crop = read_crop(dataset.crop_files[i])
            for k, path in enumerate(mine):
                if not path.is_file():
                    fake, _ = self_blend(crop, _or_none(landmarks), np.random.default_rng([settings.seed, int(i), k]),
                                         settings, margin=dataset.margin)
                    ok, png = cv2.imencode(".png", fake)
                    if not ok:
                        raise UsageError(f"{path}: cannot encode the pseudo-fake")
                    _files.write_bytes(path, png.tobytes())
        paths += mine
        done += 1
        emit(progress, "pseudo-fakes", done, len(reals), "crop")
    keep = np.arange(len(dataset)) if settings.fakes == "both" else reals
    source = np.repeat(reals, settings.blends)
    kept_row = np.full(len(dataset), -1)
    kept_row[keep] = np.arange(len(keep))
    no_face = dataset.no_face
    if settings.fakes != "both":
        real_videos = no_face.labels == 0
        no_face = type(no_face)(no_face.video_ids[real_videos], no_face.groups[real_videos],
                                no_face.labels[real_videos])
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}+{METHOD}",  # what the card's evidence names: validated on pseudo-fakes too
        video_ids=np.concatenate([dataset.video_ids[keep],
                                  np.asarray([f"{v}+{METHOD}" for v in dataset.video_ids[source]], dtype=object)]),
        groups=np.concatenate([dataset.groups[keep], dataset.groups[source]]),
        labels=np.concatenate([dataset.labels[keep], np.ones(len(source), dtype=np.int64)]),
        methods=np.concatenate([dataset.methods[keep], np.full(len(source), METHOD, dtype=object)]),
        crop_paths=np.concatenate([dataset.crop_paths[keep],
                                   np.asarray([p.relative_to(dataset.root).as_posix() for p in paths], dtype=object)]),
        no_face=no_face,
        manifest_digest=hashlib.sha256(f"{dataset.manifest_digest}+{folder.name}+{settings.fakes}".encode())
        .hexdigest()[:16],
        origins=np.concatenate([np.full(len(keep), -1), kept_row[source]]))


def _or_none(landmarks: np.ndarray) -> np.ndarray | None:
    return None if np.isnan(landmarks).any() else landmarks


def _outline(landmarks: np.ndarray) -> np.ndarray | None:
    import cv2

    points = _or_none(landmarks)
    return None if points is None else cv2.convexHull(points.astype(np.float32))[:, 0, :]


@dataclasses.dataclass(frozen=True)
class FreshBlends:
    """Makes a training row's pseudo-fake anew from its real crop at every epoch: a base being fine-tuned would
    learn a few cached blends by heart, while a new one each time leaves it only what all blends share."""

    origins: np.ndarray  # per row, the row of its real crop, -1 for crops of the data's own
    outlines: dict[int, np.ndarray | None]  # real row -> its mesh (None: none, an ellipse mask); with the default
    # mask only the mesh's convex hull, which makes the same mask: each worker process gets a copy
    settings: TrainSettings
    margin: float

    @classmethod
    def of(cls, dataset, settings: TrainSettings) -> FreshBlends | None:
        if dataset.origins is None or not (dataset.origins >= 0).any():
            return None
        reals = np.unique(dataset.origins[dataset.origins >= 0])
        meshes = dataset.landmarks(reals)
        shape = _outline if settings.blend_mask == "hull" else _or_none
        return cls(dataset.origins, {int(r): shape(m) for r, m in zip(reals, meshes)}, settings, dataset.margin)

    def blend(self, files: np.ndarray, row: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """The row's new pseudo-fake and its blending mask, or None for a crop of the data's own (read as it is)."""
        from ..data.crops import read_crop

        origin = int(self.origins[row])
        if origin < 0:
            return None
        return self_blend(read_crop(files[origin]), self.outlines[origin], rng, self.settings, margin=self.margin)


def write_blend_grids(crops: list[str | Path], out: str | Path, settings: TrainSettings | None = None, *,
                      seeds: int = 3, margin: float = 0.3, limits: InputLimits | None = None
                      ) -> list[tuple[Path, Path | None, str]]:
    """For each face crop, `blend_grid` over `seeds` seeds (from `settings.seed` on; default settings: the
    `--fakes self-blended` recipe's) as OUT/<name>-blends.png.
    Returns (crop, written file or None, problem): an unreadable crop, or one over `limits` (checked from its header
    before it is decoded), is one problem, the rest go on. Raises OptionError for `seeds` outside 1-MAX_GRID_SEEDS
    or a `margin` that `prepare` would refuse, UsageError when OUT is not a folder."""
    import re

    import cv2

    from ..data.frames import check_image_size
    from ..data.landmarks import FaceMesh
    from ..errors import InputError, OptionError
    from ..options import declared

    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_GRID_SEEDS:
        raise OptionError("seeds", f"must be an integer in [1, {MAX_GRID_SEEDS}], got {seeds!r}")
    if (problem := declared(PrepareSettings)["margin"].problem(margin)) is not None:
        raise OptionError("margin", problem)
    s, limits = settings or TrainSettings.preset("self-blended"), limits or InputLimits()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: not a folder (OUT is the folder the grids go into)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot make the folder ({exc.strerror})") from None
    mesh, taken, results = None, set(), []
    for crop_path in map(Path, crops):
        try:
            check_image_size(crop_path.read_bytes(), limits)
        except InputError as exc:  # over the limits, or not an image whose size can be read first
            results.append((crop_path, None, "cannot read as an image" if str(exc).startswith("cannot read") else
                            str(exc)))
            continue
        except OSError:
            pass  # said below
        crop = _files.read_image(crop_path) if crop_path.is_file() else None
        if crop is None:
            results.append((crop_path, None, "cannot read as an image" if crop_path.exists() else "file not found"))
            continue
        mesh = mesh or FaceMesh()
        landmarks = mesh.landmarks(crop)
        stem = re.sub(r"[^\w.-]+", "_", crop_path.stem)[:100] or "crop"
        name, n = f"{stem}-blends.png", 1
        while name in taken:  # two crops of one name from two folders
            n += 1
            name = f"{stem}-{n}-blends.png"
        taken.add(name)
        ok, png = cv2.imencode(".png", blend_grid(crop, landmarks, list(range(s.seed, s.seed + seeds)), s,
                                                  margin=margin))
        if not ok:
            results.append((crop_path, None, "cannot encode the grid"))
            continue
        _files.write_bytes(out / name, png.tobytes())
        results.append((crop_path, out / name, "" if landmarks is not None else "no face mesh: an ellipse mask"))
    return results
