"""Sample frames from a video (or a still image) without holding the video in memory.

Seeking costs a decode from the previous keyframe; decoding on costs every frame in between. We read the
packet index first (demuxing is cheap next to decoding) and, for each frame we want, take whichever is
cheaper, so that videos with 1 s keyframes are sought and videos with 250-frame GOPs are decoded through.
Only kept frames are converted to arrays, directly at the working size.

A sample needs a frame near its time, not that exact frame. With a tolerance, the decoder skips the frames
that no other frame references (most B-frames of a real upload: about half of them) and each sample is the
nearest decoded frame within the tolerance, decoded exactly as a full decode would; a sample with no such
frame is decoded exactly after all.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _files
from ..config import InputLimits, PrepareSettings
from ..errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
# A seek flushes the decoder and reads from the keyframe; counted as this many decoded frames.
SEEK_OVERHEAD_FRAMES = 3
TICK_CHUNK = 4096  # sampling ticks placed at a time


@dataclass(frozen=True)
class Frame:
    """One sampled frame at working resolution; `scale` maps its pixels back to the source's."""

    index: int
    timestamp: float
    image: np.ndarray  # H x W x 3, BGR uint8, upright (a video's display rotation applied)
    scale: float  # working pixels per source pixel (<= 1)


@dataclass(frozen=True)
class FramePlan:
    """Which frames of a video to decode and how; exposed for benchmarks and tests."""

    pts: tuple[int, ...]  # presentation timestamps, sorted; position = frame index
    keyframes: tuple[int, ...]  # frame indices of keyframes, sorted
    steps: tuple[tuple[int, int | None], ...]  # (frame to keep, keyframe to seek to first or None)

    @property
    def targets(self) -> tuple[int, ...]:
        return tuple(t for t, _ in self.steps)

    @property
    def seeks(self) -> int:
        return sum(k is not None for _, k in self.steps)

    @property
    def decoded(self) -> int:
        """Frames the plan decodes: from the seek's keyframe, or on from the previous target."""
        total, pos = 0, -1
        for t, key in self.steps:
            total += t - (pos + 1 if key is None else key) + 1
            pos = t
        return total


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_media(path: str | Path) -> bool:
    """A video or image by its suffix, and not a hidden file (macOS' `._clip.mp4` and the like)."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES and not path.name.startswith(".")


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int, float]:
    """Size after shrinking the long side to `max_side` (never enlarging), and the scale used."""
    long_side = max(width, height)
    if not max_side or long_side <= max_side:
        return width, height, 1.0
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def target_indices(times: np.ndarray, *, fps: float | None, frames: int | None) -> list[int]:
    """Frame indices to keep: the first frame at or after each 1/fps tick, or `frames` evenly spaced."""
    n = len(times)
    if n == 0:
        return []
    if frames is not None:
        return sorted(set(np.linspace(0, n - 1, num=min(frames, n)).round().astype(int).tolist()))
    if not fps or fps <= 0:
        raise ValueError("fps must be positive")
    step = 1.0 / fps
    count = int(np.ceil((times[-1] + 1e-9) / step))  # the ticks of np.arange(0, times[-1] + 1e-9, step)
    # Half a frame of tolerance so that a tick that falls on a frame's timestamp picks that frame.
    half_frame = 0.5 * float(np.median(np.diff(times))) if n > 1 else 0.0
    # Ticks a chunk at a time, jumping over the ticks of a gap (they all pick the frame after it): what this holds
    # is bounded by the frames, never by the time their timestamps claim.
    chosen: set[int] = set()
    k = 0
    while k < count:
        ticks = np.arange(k, min(count, k + TICK_CHUNK), dtype=np.float64) * step
        idx = np.searchsorted(times, ticks - half_frame, side="left")
        chosen.update(int(i) for i in idx if i < n)
        last = int(idx[-1])
        if last >= n:
            break
        k = max(k + len(ticks), int((times[last] + half_frame) / step))  # no later tick before it picks another
    return sorted(chosen)


def keyframe_before(keyframes, target: int) -> int:
    """The last keyframe at or before frame `target`: where decoding it must start."""
    return keyframes[max(0, bisect.bisect_right(keyframes, target) - 1)] if keyframes else 0


def plan(keyframes: list[int], targets: list[int]) -> list[tuple[int, int | None]]:
    """For each target, (target, keyframe to seek to) when decoding from that keyframe beats decoding on from
    the previous target, else (target, None)."""
    steps, pos = [], -1  # pos: index of the last decoded frame
    for t in targets:
        k = keyframe_before(keyframes, t)
        steps.append((t, k if t - k + SEEK_OVERHEAD_FRAMES < t - pos else None))
        pos = t
    return steps


def scan(path: str | Path, *, max_minutes: float | None = None) -> tuple[list[int], list[int], float]:
    """Demux (no decode) to get every frame's pts, the keyframe indices and the stream time base.

    With `max_minutes`, raises InputError as soon as the container's or the stream's declared duration, or a
    packet's time from the first, is over it: a video's length is known before anything is held for it."""
    import av

    with _open(path) as container:
        stream = _video_stream(container, path)
        time_base = float(stream.time_base)
        if max_minutes is not None:
            _check_minutes((container.duration or 0) / av.time_base / 60, max_minutes)
            _check_minutes((stream.duration or 0) * time_base / 60, max_minutes)
        entries = []
        first = None
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    first = packet.pts if first is None else first
                    if max_minutes is not None:
                        _check_minutes((packet.pts - first) * time_base / 60, max_minutes)
                    entries.append((packet.pts, bool(packet.is_keyframe)))
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what could be read, decode will tell whether it is usable
    entries.sort()
    pts = [p for p, _ in entries]
    keyframes = [i for i, (_, key) in enumerate(entries) if key]
    return pts, keyframes, time_base


def make_plan(path: str | Path, *, fps: float | None = 1.0, frames: int | None = None,
              max_minutes: float | None = None) -> FramePlan:
    """Raises InputError for a video over `max_minutes` (before any frame is planned)."""
    pts, keys, time_base = scan(path, max_minutes=max_minutes)
    times = (np.asarray(pts, dtype=np.float64) - (pts[0] if pts else 0)) * time_base
    targets = target_indices(times, fps=fps, frames=frames)
    return FramePlan(tuple(pts), tuple(keys), tuple(plan(keys, targets)))


def tolerance_applies(fplan: FramePlan, time_base: float, tolerance: float) -> bool:
    """Whether samples may come from the nearest reference frame: only where consecutive samples are more than two
    tolerances apart, so that no two can pick the same frame (at 1 fps with 0.1 s, always)."""
    if tolerance <= 0:
        return False
    targets = [fplan.pts[t] for t in fplan.targets]
    return all((b - a) * time_base > 2 * tolerance for a, b in zip(targets, targets[1:]))


def sample_frames(path: str | Path, *, fps: float | None = 1.0, frames: int | None = None,
                  max_side: int | None = 1000, tolerance: float = PrepareSettings.tolerance,
                  limits: InputLimits | None = None) -> Iterator[Frame]:
    """Yield the sampled frames of a video or image, in order; each frame's index and timestamp are its own.

    `tolerance` (seconds, by default `PrepareSettings.tolerance`'s): a sample may be the nearest frame that other
    frames reference, so that unreferenced frames are never decoded; 0 decodes each sample's exact frame. Raises
    InputError when the file cannot be opened, is over `limits` (its length and its header's size before anything
    is decoded, each frame's size before it is converted), or yields no frame at all.
    """
    limits = limits or InputLimits()
    if is_image(path):
        yield _read_image(path, max_side, limits)
        return
    import av

    fplan = make_plan(path, fps=fps, frames=frames, max_minutes=limits.max_minutes)
    if not fplan.steps:
        raise InputError("no decodable frames")
    pts = fplan.pts
    index_of = {p: i for i, p in enumerate(pts)}
    yielded = 0
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        time_base = float(stream.time_base)
        w, h = stream.codec_context.width, stream.codec_context.height
        _check_pixels(w * h, limits, f"{w}x{h}: ")
        _check_minutes((pts[-1] - pts[0]) * time_base / 60, limits.max_minutes)
        nearest = tolerance_applies(fplan, time_base, tolerance)
        slack = round(tolerance / time_base) if nearest else 0  # the tolerance in pts units
        context = stream.codec_context
        if nearest:
            context.skip_frame = "NONREF"
        decoder, pos = None, -1
        try:
            for target, key in fplan.steps:
                if target <= pos:
                    continue  # a damaged stream made us overshoot; that frame is gone
                if key is not None or decoder is None:
                    if key is not None:
                        container.seek(pts[key], stream=stream, backward=True, any_frame=False)
                    decoder = container.decode(stream)
                if nearest:
                    frame = _decode_nearest(decoder, pts[target], slack)
                    if frame is None:  # no reference frame close enough: this one sample is decoded exactly
                        frame, decoder = _decode_exactly(container, stream, pts, fplan.keyframes, target)
                else:
                    frame = _decode_until(decoder, pts[target])
                if frame is None:
                    break
                pos = index_of.get(frame.pts, target)
                # a stream may change size mid-way (a new SPS, a JPEG per frame): the header's size is not enough
                _check_pixels(frame.width * frame.height, limits, f"{frame.width}x{frame.height}: ")
                w, h, scale = working_size(frame.width, frame.height, max_side)
                image = _upright(frame.to_ndarray(format="bgr24", width=w, height=h), frame.rotation)
                yield Frame(index=pos, timestamp=(frame.pts - pts[0]) * time_base, image=image, scale=scale)
                yielded += 1
        except av.error.FFmpegError as exc:
            if not yielded:
                raise InputError(f"cannot decode: {_av_reason(exc)}") from None
    if not yielded:
        raise InputError("no decodable frames")


def _upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """The frame as players show it: phones store the sensor's pixels and a display rotation (counter-clockwise
    degrees, PyAV's `VideoFrame.rotation`); a sideways face is a face most detectors miss."""
    quarters = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarters)) if quarters else image


def _decode_until(decoder, target_pts: int):
    for frame in decoder:
        if frame.pts is not None and frame.pts >= target_pts:
            return frame
    return None


def _decode_nearest(decoder, target_pts: int, slack: int):
    """The decoded frame nearest to `target_pts` within `slack` (the earlier on a tie), or None. A frame read past
    the target and not taken is never needed again: the next sample lies more than two slacks on."""
    before = None
    for frame in decoder:
        if frame.pts is None or frame.pts < target_pts - slack:
            continue
        if frame.pts < target_pts:
            before = frame
            continue
        if frame.pts - target_pts > slack:
            return before
        return before if before is not None and target_pts - before.pts <= frame.pts - target_pts else frame
    return before


def _decode_exactly(container, stream, pts: tuple[int, ...], keyframes: tuple[int, ...], target: int):
    """Frame `target` itself, from its keyframe with nothing skipped; then skipping resumes. Returns the frame and
    the decoder to go on with."""
    stream.codec_context.skip_frame = "DEFAULT"
    container.seek(pts[keyframe_before(keyframes, target)], stream=stream, backward=True, any_frame=False)
    decoder = container.decode(stream)
    frame = _decode_until(decoder, pts[target])
    stream.codec_context.skip_frame = "NONREF"
    return frame, decoder


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open as video: {_av_reason(exc)}") from None


def _video_stream(container, path):
    if not container.streams.video:
        raise InputError("no video stream")
    return container.streams.video[0]


def _av_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[0]


def _check_pixels(pixels: int, limits: InputLimits, size: str = "") -> None:
    if pixels > limits.max_megapixels * 1e6:
        raise InputError(f"{size}{pixels / 1e6:.3g} megapixels, over the limit of {limits.max_megapixels:g}")


def _check_minutes(minutes: float, limit: float) -> None:
    if minutes > limit:
        raise InputError(f"the video lasts {minutes:.1f} minutes, over the limit of {limit:g}")


def check_image_size(data: bytes, limits: InputLimits) -> None:
    """Raises InputError for an image over `limits`, from its header (Pillow reads it, decoding nothing), whatever
    its name says; an image whose size cannot be read that way (not a format Pillow knows: Radiance HDR, say,
    which OpenCV would decode in full) is refused, not decoded to find out."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as header:
            _check_pixels(header.width * header.height, limits, f"{header.width}x{header.height}: ")
    except Image.DecompressionBombError as exc:  # Pillow's own cap, far above any photograph, names the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        _check_pixels(int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0), limits)
    except (UnidentifiedImageError, OSError):
        raise InputError("cannot read as image (not JPEG, PNG, BMP, WebP or TIFF, whose size is checked before "
                         "decoding)") from None


def _read_image(path: str | Path, max_side: int | None, limits: InputLimits) -> Frame:
    import cv2

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})") from None
    check_image_size(data, limits)
    image = _files.read_image(path)
    if image is None:
        raise InputError("cannot read as image")
    h, w = image.shape[:2]
    tw, th, scale = working_size(w, h, max_side)
    if scale != 1.0:
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
    return Frame(index=0, timestamp=0.0, image=image, scale=scale)
