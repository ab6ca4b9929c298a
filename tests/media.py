"""Real media for tests: videos encoded with PyAV from package photos, and files broken on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import skimage.data


def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def coffee() -> np.ndarray:
    """A real photo with no face in it."""
    return cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)


def write_video(path: Path, image: np.ndarray, *, seconds: float = 2.0, fps: int = 25, size=(320, 240),
                rotation: int = 0, bframes: int | None = None) -> Path:
    """A still photo drifting slowly, as H.264 (x264's defaults: 3 B-frames as a pyramid, unless `bframes`). With
    `rotation`, stored as a phone stores it: the pixels turned clockwise by `rotation` degrees and the display
    rotation (counter-clockwise) that turns them back."""
    import av

    w, h = size
    base = cv2.resize(image, (w + 40, h + 40))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = (h, w) if rotation % 180 else (w, h)
        stream.pix_fmt = "yuv420p"
        if bframes is not None:
            stream.options = {"x264-params": f"bframes={bframes}"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(int(seconds * fps)):
            frame = np.ascontiguousarray(np.rot90(base[i % 20:i % 20 + h, i % 40:i % 40 + w], -rotation // 90))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())
    return path


def jpeg_video(path: Path, frames: list[tuple[float, tuple[int, int]]]) -> Path:
    """An MJPEG video in Matroska written packet by packet: one grey JPEG per (time in seconds, (width, height)),
    each at its own time and size whatever the stream's header says (the header has the first frame's)."""
    import fractions

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height = frames[0][1]
        stream.pix_fmt, stream.time_base = "yuvj420p", fractions.Fraction(1, 1000)
        for t, (w, h) in frames:
            ok, jpg = cv2.imencode(".jpg", np.full((h, w, 3), 120, np.uint8))
            packet = av.Packet(jpg.tobytes())
            packet.pts = packet.dts = round(t * 1000)
            packet.time_base, packet.stream, packet.is_keyframe = stream.time_base, stream, True
            container.mux(packet)
    return path


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def zero_payload(src: Path, dst: Path) -> Path:
    """Keep the MP4 index (moov) but zero every coded frame: opens fine, decodes nothing."""
    data = bytearray(src.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov")
    assert 4 < start < end, "expected mdat before moov"
    data[start:end] = bytes(end - start)
    dst.write_bytes(bytes(data))
    return dst


def huge_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims `width` x `height` pixels (its data is cut short): what a decompression
    bomb looks like to a reader that trusts the header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 64)  # 64 rows of the claimed height
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path
