"""Augmentations for fine-tuning, as the field's winning recipes use them, each on by name with a strength.

A spec is `default`, `none`, `keras` or `NAME[=STRENGTH],...` with STRENGTH in (0, 1] (1 when left out). The
strength scales how hard an augmentation hits; each is applied to a crop with probability 1/2 (flip: half the
strength; keras, a pipeline of its own, always). Deepfake artefacts live in fine texture, blending seams and
colour mismatch around the face, so the augmentations degrade exactly those (re-compression, resampling, blur,
noise, colour) or hide the parts a detector leans on (eyes, nose, mouth), forcing it to look at the whole face.
The names and the grammar of a spec are declared in `registries`, which the settings validate against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .. import registries
from ..data.crops import crop_scale
from ..errors import UsageError
from ..registries import implements, parse_augment

Augmentation = Callable[[np.ndarray, np.random.Generator, float, "FaceParts"],
                        "np.ndarray | tuple[np.ndarray, FaceParts]"]  # image, rng, strength, where the face's parts
# are -> the image; one that moves pixels returns the parts moved with them too


def _flip(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> tuple[np.ndarray, FaceParts]:
    return np.ascontiguousarray(image[:, ::-1]), face.mirrored(image.shape[1])


def _reframe(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts
             ) -> tuple[np.ndarray, FaceParts]:
    """The crop cut again as another detector or margin would cut it: a window up to 20% smaller or larger than
    the crop (the face then fills more or less of it) and shifted by up to 5% of the side, resized back, the
    edges beyond the crop mirrored. Meant for a detector trained on one collection's framing and thrown by another's
    (bench/generalize.py: FF++ clips cut with prepare's default margin score 0.09 lower than clips framed alike); in
    the self-blended recipe it did not help (row self-blended-reframe), so no preset uses it."""
    import cv2

    h, w = image.shape[:2]
    zoom = float(rng.uniform(1 - 0.2 * s, 1 + 0.2 * s))  # the window's side over the crop's
    dx, dy = rng.uniform(-0.05 * s, 0.05 * s, size=2) * np.array([w, h])
    # where each output pixel comes from: the window's centre at the crop's centre moved by (dx, dy)
    back = np.array([[zoom, 0, (1 - zoom) * w / 2 + dx], [0, zoom, (1 - zoom) * h / 2 + dy]], dtype=np.float64)
    out = cv2.warpAffine(image, back, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT_101)
    return out, face.moved(back, w)


def _jpeg(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    import cv2

    quality = int(rng.integers(round(95 - 65 * s), 96))  # 30-95 at full strength
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image


def _h264(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    """One frame through libx264 (PyAV) and back: the blocks, deblocking and 4:2:0 chroma of the video codec most
    collections are compressed with (FaceForensics++ c23 is CRF 23), which JPEG's do not mimic. The codecs are used
    without a container and the decoder on one thread: the pixels that muxing and demuxing gave, in three quarters of
    the time. The colours go through libswscale both ways, which darkens them by 1-3 levels; OpenCV's conversions do
    not, but the recipe trained with them scored lower on two seeds (README: *The pipeline's own work*), so the
    measured round trip stays."""
    from av import CodecContext, VideoFrame

    crf = int(rng.integers(18, 19 + round(22 * s)))  # 18-40 at full strength
    h, w = image.shape[:2]
    even = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # 4:2:0 needs even sides
    encoder = CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = even.shape[1], even.shape[0], "yuv420p"
    encoder.time_base = Fraction(1, 1)
    encoder.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}  # a loader worker: one thread
    frame = VideoFrame.from_ndarray(even, format="bgr24").reformat(format="yuv420p")
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    decoder = CodecContext.create("h264", "r")
    decoder.thread_count = 1
    decoded = [f for packet in [*packets, None] for f in decoder.decode(packet)]
    return np.ascontiguousarray(decoded[0].to_ndarray(format="bgr24")[:h, :w])


def _downscale(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    factor = rng.uniform(1 - 0.75 * s, 1.0)  # down to a quarter of the side at full strength
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _blur(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    import cv2

    sigma = rng.uniform(0.1, 0.1 + 2.5 * s) * image.shape[0] / 224  # sigma in 224 px units
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)


def _noise(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    noisy = rng.normal(0, rng.uniform(0, 25 * s), image.shape)
    noisy += image  # in place: a third less time than a new array each step, the same pixels
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)


def _colour(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    hue = rng.uniform(-5, 5) * s  # OpenCV hue is 0-180: +-10 degrees
    out = hsv_changed(image, hue, 1 + rng.uniform(-0.4, 0.4) * s).astype(np.float32)
    contrast, brightness = 1 + rng.uniform(-0.3, 0.3) * s, rng.uniform(-0.3, 0.3) * s * 255
    mean = out.mean()
    return np.clip((out - mean) * contrast + mean + brightness, 0, 255).astype(np.uint8)


def hsv_changed(image: np.ndarray, hue: float, saturation: float, value: float = 1.0) -> np.ndarray:
    """A BGR uint8 image with its hue turned by `hue` (OpenCV's 0-180 units) and its saturation and value scaled,
    each in float32 and clipped to uint8. Each channel's result depends on its own value alone, so one lookup table
    per channel gives the pixels that arithmetic on every pixel gives, in under half the time."""
    import cv2

    v = np.arange(256, dtype=np.float32)
    tables = [(v + hue) % 180, v * saturation, v * value]
    lut = np.stack([np.clip(t.astype(np.float32), 0, 255).astype(np.uint8) for t in tables], axis=-1)
    return cv2.cvtColor(cv2.LUT(cv2.cvtColor(image, cv2.COLOR_BGR2HSV), lut[:, None, :]), cv2.COLOR_HSV2BGR)


def _cutout(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    out = image.copy()
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        side = max(1, round(rng.uniform(0.1, 0.1 + 0.3 * s) * min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out[y:y + side, x:x + side] = 0
    return out


# Face parts as (x0, y0, x1, y1) fractions of the face box: where a frontal face's eyes, nose and mouth sit.
FACE_PARTS = {"eyes": (0.12, 0.22, 0.88, 0.48), "nose": (0.33, 0.38, 0.67, 0.72), "mouth": (0.22, 0.64, 0.78, 0.92)}


def face_part_box(part: str, side: int, margin: float) -> tuple[int, int, int, int]:
    """A part's pixel box in a square crop of `side` cut with `margin` around the face box (prepare's geometry:
    the face box is the middle 1 / crop_scale(margin) of the crop)."""
    face = side / crop_scale(margin)
    offset = (side - face) / 2
    x0, y0, x1, y1 = FACE_PARTS[part]
    return (round(offset + x0 * face), round(offset + y0 * face), round(offset + x1 * face),
            round(offset + y1 * face))


# The face mesh's points (data.landmarks) around each part: eye corners and lids with the brows, the nose from its
# bridge to its wings, the lips' outline.
MESH_PARTS = {"eyes": [33, 133, 159, 145, 263, 362, 386, 374, 70, 105, 107, 300, 334, 336],
              "nose": [6, 1, 2, 98, 327, 4, 5, 195], "mouth": [61, 291, 0, 17, 37, 267, 84, 314]}


def mesh_part_boxes(points: np.ndarray) -> np.ndarray:
    """(3, 4) float32 boxes (x0, y0, x1, y1) of eyes, nose and mouth from a crop's face mesh, each grown by a fifth
    of its size; NaN without a mesh."""
    if np.isnan(points).any():
        return np.full((len(MESH_PARTS), 4), np.nan, dtype=np.float32)
    boxes = []
    for part in FACE_PARTS:
        p = points[MESH_PARTS[part]]
        low, high = p.min(0), p.max(0)
        pad = 0.2 * (high - low) + 2
        boxes.append([*(low - pad), *(high + pad)])
    return np.asarray(boxes, dtype=np.float32)


@dataclass(frozen=True)
class FaceParts:
    """Where a crop's eyes, nose and mouth are: from its face mesh when it has one (`mesh_part_boxes`), else from
    the crop's geometry (`face_part_box`, the face box in the middle of a crop cut with `margin`); and, for a
    pseudo-fake, where it was blended (`blend`, its mask: `--blend-map`'s target moves with the pixels)."""

    margin: float
    boxes: np.ndarray | None = None
    blend: np.ndarray | None = None

    def box(self, part: str, side: int) -> tuple[int, int, int, int]:
        if self.boxes is None:
            return face_part_box(part, side, self.margin)
        x0, y0, x1, y1 = self.boxes[list(FACE_PARTS).index(part)]
        return round(float(x0)), round(float(y0)), round(float(x1)), round(float(y1))

    def mirrored(self, width: int) -> FaceParts:
        b = self.boxes  # the geometry's boxes are symmetric
        if b is not None:
            b = b.copy()
            b[:, 0], b[:, 2] = width - self.boxes[:, 2], width - self.boxes[:, 0]
        return FaceParts(self.margin, b, None if self.blend is None else np.ascontiguousarray(self.blend[:, ::-1]))

    def moved(self, back: np.ndarray, side: int) -> FaceParts:
        """The parts of a square crop of `side` after a zoom and shift whose `back` (2 x 3) maps each new pixel
        to where it came from."""
        b = self.boxes if self.boxes is not None else np.asarray(
            [face_part_box(part, side, self.margin) for part in FACE_PARTS], dtype=np.float32)
        zoom, offset = back[0, 0], back[:, 2]
        blend = self.blend
        if blend is not None:
            import cv2

            blend = cv2.warpAffine(blend, back, blend.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT_101)  # as the pixels moved
        return FaceParts(self.margin, ((b - np.tile(offset, 2)) / zoom).astype(np.float32), blend)


def _parts(image: np.ndarray, rng: np.random.Generator, s: float, face: FaceParts) -> np.ndarray:
    out = image.copy()
    names = list(FACE_PARTS)
    chosen = rng.choice(len(names), size=1 + int(rng.random() < s / 2), replace=False)
    for i in chosen:
        x0, y0, x1, y1 = face.box(names[i], image.shape[0])
        jitter = round(0.05 * image.shape[0])
        dx, dy = (int(v) for v in rng.integers(-jitter, jitter + 1, 2))
        out[max(0, y0 + dy):max(0, y1 + dy), max(0, x0 + dx):max(0, x1 + dx)] = 0
    return out


def keras(image: np.ndarray, rng: np.random.Generator, s: float = 1.0, face: FaceParts | None = None) -> np.ndarray:
    """The reference's Keras ImageDataGenerator: rotation 40 degrees, width and height shift 0.2, shear 0.2
    (degrees, as Keras reads it), zoom 0.8-1.2, horizontal flip, edges repeated."""
    import cv2

    rotation, shift, shear, zoom = 40.0 * s, 0.2 * s, 0.2 * s, 0.2 * s
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
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


AUGMENTATIONS: dict[str, tuple[Augmentation, str]] = {
    "flip": (_flip, "mirror left-right (with probability strength / 2)"),
    "jpeg": (_jpeg, "re-compress as JPEG at a random quality (30-95 at full strength)"),
    "h264": (_h264, "re-compress as one H.264 frame at a random CRF (18-40 at full strength)"),
    "downscale": (_downscale, "shrink and enlarge back (down to 1/4 of the side)"),
    "blur": (_blur, "Gaussian blur (sigma up to 2.6 px at 224 px)"),
    "noise": (_noise, "Gaussian noise (std up to 25 grey levels)"),
    "colour": (_colour, "hue, saturation, brightness and contrast jitter"),
    "cutout": (_cutout, "black out 1-3 random squares (up to 40% of the side)"),
    "parts": (_parts, "black out the eyes, nose or mouth, located by the crop's face mesh (else its geometry)"),
    "keras": (keras, "the reference's Keras augmentation (rotation, shifts, shear, zoom, flip)"),
    "reframe": (_reframe, "cut the crop again: up to 20% tighter or wider, shifted up to 5% (edges mirrored)"),
}
implements("augmentation", registries.AUGMENTATIONS, AUGMENTATIONS)


@dataclass(frozen=True)
class Augmenter:
    """A parsed spec bound to the crops' margin; a pure function of (image, rng, the crop's face-part boxes)."""

    steps: tuple[tuple[str, float], ...]
    margin: float  # of the crops (see PreparedDataset.margin): where the face parts are

    @classmethod
    def from_spec(cls, spec: str, *, margin: float) -> Augmenter:
        """Raises UsageError where an augmentation cannot run here (h264 with a PyAV built without libx264)."""
        steps = parse_augment(spec)
        if any(name == "h264" for name, _ in steps):
            import av

            if "libx264" not in av.codecs_available:
                raise UsageError("--augment h264: this PyAV has no libx264 encoder (PyPI's wheels have it)")
        return cls(steps, margin)

    def __call__(self, image: np.ndarray, rng: np.random.Generator, boxes: np.ndarray | None = None) -> np.ndarray:
        return self.apply(image, rng, boxes)[0]

    def apply(self, image: np.ndarray, rng: np.random.Generator, boxes: np.ndarray | None = None,
              blend: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The augmented image and its blending mask moved as its pixels were (None without one); `blend` draws
        nothing from `rng`, so the image is the same with or without it. Raises UsageError for a mask and keras's
        augmentation, which moves pixels without it."""
        face = FaceParts(self.margin, None if boxes is None or np.isnan(boxes).any() else boxes, blend)
        for name, strength in self.steps:
            fn = AUGMENTATIONS[name][0]
            if name == "keras":
                if blend is not None:
                    raise UsageError("--augment keras moves the pixels without the blend's mask (--blend-map)")
                image = fn(image, rng, strength, face)
            elif rng.random() < (strength / 2 if name == "flip" else 0.5):
                image = fn(image, rng, strength, face)
                if isinstance(image, tuple):  # it moved the pixels, and the parts with them
                    image, face = image
        return image, face.blend
