"""Synthetic DFDC-style collections: real face photographs moving over real backgrounds, and fakes made
from them by re-rendering the face (or only the mouth) the way cheap face swaps do.

Deterministic from the seed. We may not ship deepfakes, so tests and the demo use these; a fake differs from
its original only inside the face region, so a detector cannot win on background or motion.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _files
from ..errors import UsageError
from ..progress import ProgressCallback, emit

SIZES = ((640, 360), (854, 480), (960, 540), (1280, 720))
METHODS = ("swap", "resample", "warp", "colour", "mouth")


@dataclass(frozen=True)
class SynthVideo:
    name: str
    label: str  # "REAL" | "FAKE"
    original: str | None
    method: str | None
    size: tuple[int, int]
    fps: int
    keyint: int
    people: int = 1  # with 2, a fake manipulates the second person only


@dataclass(frozen=True)
class SynthResult:
    out: Path
    videos: tuple[SynthVideo, ...]

    @property
    def metadata_path(self) -> Path:
        return self.out / "metadata.json"


@dataclass(frozen=True)
class _Face:
    portrait: np.ndarray  # BGR head-and-shoulders crop
    box: tuple[int, int, int, int]  # face box inside the portrait


def _photos() -> list[np.ndarray]:
    """Real face photographs shipped inside installed packages (BGR)."""
    import cv2
    import matplotlib.cbook
    import skimage.data

    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return [astronaut, hopper]


def _backgrounds() -> list[np.ndarray]:
    import cv2
    import skimage.data

    out = []
    for name in ("coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "gravel", "grass"):
        im = getattr(skimage.data, name)()
        out.append(cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return out


def _faces() -> list[_Face]:
    from .faces import HaarDetector

    detector = HaarDetector(detect_side=None, min_neighbors=3)
    faces = []
    for photo in _photos():
        b = max(detector.detect(photo), key=lambda b: b.area)
        f, cx, cy = b.w, b.x + b.w / 2, b.y + b.h / 2
        h, w = photo.shape[:2]
        x0, x1 = max(0, int(cx - 1.3 * f)), min(w, int(cx + 1.3 * f))
        y0, y1 = max(0, int(cy - 1.5 * f)), min(h, int(cy + 1.8 * f))
        faces.append(_Face(photo[y0:y1, x0:x1].copy(), (int(b.x) - x0, int(b.y) - y0, int(b.w), int(b.h))))
    return faces


def _ellipse_mask(shape: tuple[int, int], centre, axes, feather: float) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (max(1, int(axes[0])), max(1, int(axes[1]))),
                0, 0, 360, 1.0, -1)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    return mask[..., None]


class _Scene:
    """One real video's look and motion; `render(t, portrait)` draws a frame with any portrait. `slot` places
    the person: 0 of 1 in the middle, or 0 and 1 of 2 on the left and the right."""

    def __init__(self, rng: np.random.Generator, face: _Face, background: np.ndarray, size, fps, seconds,
                 slot: int = 0, people: int = 1):
        import cv2

        self.w, self.h = size
        self.fps, self.n = fps, int(round(seconds * fps))
        flip = rng.random() < 0.5
        gains = rng.uniform(0.8, 1.2, 3)
        portrait = face.portrait[:, ::-1] if flip else face.portrait
        bx, by, bw, bh = face.box
        self.face_box = (portrait.shape[1] - bx - bw if flip else bx, by, bw, bh)
        self.portrait = np.clip(portrait.astype(np.float32) * gains, 0, 255).astype(np.uint8)
        ph, pw = self.portrait.shape[:2]
        self.mask = _ellipse_mask((ph, pw), (pw / 2, ph / 2), (pw / 2 * 0.95, ph / 2 * 0.98), 6)
        face_px = rng.uniform(0.22, 0.4) * self.h if people == 1 else rng.uniform(0.16, 0.24) * self.h
        self.scale = face_px / bw
        pad = 0.15
        bg = cv2.resize(background, (int(self.w * (1 + pad)), int(self.h * (1 + pad))), interpolation=cv2.INTER_AREA)
        light = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.3), self.w, dtype=np.float32)
        self.light = (light if rng.random() < 0.5 else light[::-1])[None, :, None]
        self.bg, self.pad = bg, pad
        lo, hi = (0.35, 0.65) if people == 1 else ((0.22, 0.3), (0.7, 0.78))[slot]
        self.centre = np.array([rng.uniform(lo, hi) * self.w, rng.uniform(0.45, 0.6) * self.h])
        self.amp = np.array([rng.uniform(0.02, 0.08 if people == 1 else 0.04) * self.w,
                             rng.uniform(0.01, 0.04) * self.h])
        self.period, self.phase = rng.uniform(2.0, 5.0), rng.uniform(0, 2 * math.pi)
        self.angle = rng.uniform(-4, 4)

    def render(self, i: int, portrait: np.ndarray, *others: tuple[_Scene, np.ndarray]) -> np.ndarray:
        """The background at frame i with this scene's person, then each (scene, portrait) of `others`."""
        t = i / self.fps
        wave = math.sin(2 * math.pi * t / self.period + self.phase)
        ox = int((0.5 + 0.5 * wave) * (self.bg.shape[1] - self.w))
        oy = int((0.5 + 0.5 * math.cos(2 * math.pi * t / self.period)) * (self.bg.shape[0] - self.h))
        frame = self.bg[oy:oy + self.h, ox:ox + self.w].astype(np.float32)
        for scene, face in ((self, portrait), *others):
            frame = scene._person(frame, i, face)
        return np.clip(frame * self.light, 0, 255).astype(np.uint8)

    def _person(self, frame: np.ndarray, i: int, portrait: np.ndarray) -> np.ndarray:
        import cv2

        t = i / self.fps
        wave = math.sin(2 * math.pi * t / self.period + self.phase)
        bx, by, bw, bh = self.face_box
        centre = self.centre + self.amp * np.array([wave, math.cos(2 * math.pi * t / (self.period * 1.3))])
        scale = self.scale * (1 + 0.06 * math.sin(2 * math.pi * t / (self.period * 0.7)))
        angle = self.angle + 5 * math.sin(2 * math.pi * t / (self.period * 1.7) + self.phase)
        m = cv2.getRotationMatrix2D((bx + bw / 2, by + bh / 2), angle, scale)
        m[:, 2] += centre - (bx + bw / 2, by + bh / 2)
        person = cv2.warpAffine(portrait, m, (self.w, self.h), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(self.mask[..., 0], m, (self.w, self.h), flags=cv2.INTER_LINEAR)[..., None]
        return frame * (1 - alpha) + person.astype(np.float32) * alpha


def _manipulate(portrait: np.ndarray, box, donor: _Face, method: str, strength: float,
                i: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Re-render the face (or mouth) region of one frame's portrait and paste it back with a seam."""
    import cv2

    bx, by, bw, bh = box
    src = portrait.astype(np.float32)
    out = src.copy()
    if method == "mouth":
        region = (bx + bw * 0.2, by + bh * 0.62, bw * 0.6, bh * 0.34)
    else:
        region = (bx + bw * 0.05, by + bh * 0.02, bw * 0.9, bh * 0.98)
    rx, ry, rw, rh = (int(v) for v in region)
    patch = src[ry:ry + rh, rx:rx + rw]
    if method == "swap":
        dx, dy, dw, dh = donor.box
        other = donor.portrait[dy + int(dh * 0.02): dy + dh, dx + int(dw * 0.05): dx + int(dw * 0.95)]
        new = cv2.resize(other, (rw, rh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        # Partial colour transfer: stronger fakes match skin tone less well (a visible seam).
        keep = 1.0 - 0.6 * strength
        new = (new - new.mean((0, 1))) + keep * patch.mean((0, 1)) + (1 - keep) * new.mean((0, 1))
    elif method == "warp":
        k = 0.06 * strength
        m = np.float32([[1 + k, k * 0.5, -k * rw * 0.4], [-k * 0.3, 1 - k * 0.5, k * rh * 0.3]])
        new = cv2.warpAffine(patch, m, (rw, rh), borderMode=cv2.BORDER_REFLECT)
    elif method == "colour":
        new = patch + np.float32([rng.choice([-1, 1]) * (6 + 18 * strength), 4 + 10 * strength, -3 * strength])
    else:  # resample, and mouth: a low-resolution generator output, upsampled
        f = 1 + 5 * strength
        small = cv2.resize(patch, (max(2, int(rw / f)), max(2, int(rh / f))), interpolation=cv2.INTER_AREA)
        new = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_LINEAR)
        if method == "mouth":  # lip-sync: the mouth opens and closes out of step with the rest
            open_ = 1 + 0.25 * strength * math.sin(2 * math.pi * 3 * i / fps)
            m = np.float32([[1, 0, 0], [0, open_, rh * (1 - open_) / 2]])
            new = cv2.warpAffine(new, m, (rw, rh), borderMode=cv2.BORDER_REFLECT) + 6 * strength
    new = new + rng.normal(0, 2 + 4 * strength, 3).astype(np.float32)  # per-frame flicker
    mask = _ellipse_mask((rh, rw), (rw / 2, rh / 2), (rw / 2 * 0.92, rh / 2 * 0.92), 1 + 3 * (1 - strength))
    out[ry:ry + rh, rx:rx + rw] = patch * (1 - mask) + new * mask
    return np.clip(out, 0, 255).astype(np.uint8)


def _name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), 10))


def _encode(path: Path, frames, size, fps: int, keyint: int) -> None:
    import av

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = keyint
            stream.options = {"preset": "veryfast", "crf": "23",
                              "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
            container.mux(stream.encode())

    _files.write_with(path, write)


@dataclass(frozen=True)
class SynthSettings:
    """What `synth` writes: how many videos, from which seed, how long, with which manipulations, what share of
    fakes, at which frame sizes, with how many people, and a keyframe every `keyint` frames (None: every second
    for half of the originals, every 250 frames, as DFDC's, for the other half). Checked on creation: raises
    UsageError for an unknown method, fewer than two videos, or a number of people other than 1 or 2."""

    videos: int = 10
    seed: int = 0
    seconds: float = 4.0
    methods: tuple[str, ...] = METHODS
    fake_fraction: float = 0.5
    sizes: tuple[tuple[int, int], ...] = SIZES
    people: int = 1
    keyint: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise UsageError(f"unknown manipulation method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
        if self.videos < 2:
            raise UsageError("need at least 2 videos (one real and one fake)")
        if self.people not in (1, 2):
            raise UsageError(f"people must be 1 or 2, got {self.people}")


def synth(out: str | Path, settings: SynthSettings | None = None, *,
          progress: ProgressCallback | None = None) -> SynthResult:
    """Write `settings.videos` H.264 videos and a DFDC `metadata.json` into `out`; each fake names its original.

    Encoded as real uploads are: x264 with B-frames (3, as a pyramid). With `people=2` every video shows two
    people side by side and a fake manipulates only one of them, as DFDC's often do. Reruns keep videos already
    written (names and content follow from the seed).
    """
    settings = settings or SynthSettings()
    videos, seconds, methods, sizes, people = (settings.videos, settings.seconds, settings.methods, settings.sizes,
                                               settings.people)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings.seed)
    faces, backgrounds = _faces(), _backgrounds()
    n_fake = min(videos - 1, max(1, round(videos * settings.fake_fraction)))
    n_real = videos - n_fake
    plans = []
    for r in range(n_real):
        vseed = int(rng.integers(2**31))
        vrng = np.random.default_rng(vseed)
        size = sizes[int(vrng.integers(len(sizes)))]
        fps = int(vrng.choice([25, 30]))
        every = settings.keyint or (fps if r % 2 == 0 else 250)
        plans.append(SynthVideo(_name(rng), "REAL", None, None, size, fps, every, people))
    fakes = []
    for k in range(n_fake):
        real = plans[k % n_real]
        method = methods[k % len(methods)]
        fakes.append(SynthVideo(_name(rng), "FAKE", real.name, method, real.size, real.fps, real.keyint, people))
    seeds = {v.name: int(rng.integers(2**31)) for v in plans + fakes}

    for done, video in enumerate(plans + fakes):
        emit(progress, "synth", done, videos, "video")
        path = out / f"{video.name}.mp4"
        if path.exists():
            continue
        srng = np.random.default_rng(seeds[video.original or video.name])  # a fake shares its original's scene
        identity = int(srng.integers(len(faces)))
        background = backgrounds[int(srng.integers(len(backgrounds)))]
        scene = _Scene(srng, faces[identity], background, video.size, video.fps, seconds, 0, people)
        second = (_Scene(srng, faces[(identity + 1) % len(faces)], background, video.size, video.fps, seconds, 1,
                         people) if people == 2 else None)
        target = second or scene  # the person a fake manipulates

        def frames_of(manipulated, scene=scene, second=second, target=target):
            for i in range(scene.n):
                portraits = {id(s): s.portrait for s in (scene, second) if s is not None}
                portraits[id(target)] = manipulated(i, target)
                others = ((second, portraits[id(second)]),) if second is not None else ()
                yield scene.render(i, portraits[id(scene)], *others)

        if video.label == "REAL":
            frames = frames_of(lambda i, s: s.portrait)
        else:
            frng = np.random.default_rng(seeds[video.name])
            strength = float(frng.uniform(0.3, 1.0))
            donor = faces[(identity + 2) % len(faces)] if people == 2 else faces[(identity + 1) % len(faces)]
            frames = frames_of(lambda i, s: _manipulate(s.portrait, s.face_box, donor, video.method, strength, i,
                                                        video.fps, frng))
        _encode(path, frames, video.size, video.fps, video.keyint)

    metadata = {f"{v.name}.mp4": {"label": v.label, "split": "train",
                                  "original": f"{v.original}.mp4" if v.original else None,
                                  **({"method": v.method} if v.method else {})}
                for v in plans + fakes}
    _files.write_text(out / "metadata.json", json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    emit(progress, "synth", videos, videos, "video")
    return SynthResult(out, tuple(plans + fakes))
