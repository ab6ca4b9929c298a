"""What the web app accepts as a job's input: an upload under the size limit whose first bytes are a container or
an image fakefinder reads (never judged by its name), or a file on the server under the allowed folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .records import JobError

# Magic bytes of the containers and images we read; anything else is refused before it reaches a decoder.
_SIGNATURES = ((4, b"ftyp", "MP4/MOV"), (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "AVI/WebP"),
               (0, b"\xff\xd8\xff", "JPEG"), (0, b"\x89PNG\r\n\x1a\n", "PNG"), (0, b"BM", "BMP"),
               (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"), (0, b"FLV", "FLV"),
               (0, b"\x00\x00\x01\xba", "MPEG-PS"), (0, b"0&\xb2u\x8ef\xcf\x11", "ASF/WMV"),
               (4, b"moov", "QuickTime"), (4, b"mdat", "QuickTime"), (4, b"free", "QuickTime"),
               (4, b"wide", "QuickTime"))


def sniff(path: Path) -> str:
    """The container an upload really is, by its first bytes. Raises JobError for an empty or foreign file."""
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        raise JobError("the file is empty")
    if head[0] == 0x47 and path.stat().st_size > 188:  # MPEG transport stream: a sync byte every 188 bytes
        with open(path, "rb") as f:
            f.seek(188)
            if f.read(1) == b"\x47":
                return "MPEG-TS"
    for offset, magic, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) / len(head)
    kind = "text" if printable > 0.95 else "not a format fakefinder reads"
    raise JobError(f"not a video or an image ({kind}; the first bytes are {head[:8]!r})", 415)


@dataclass(frozen=True)
class Uploads:
    """The server's rules for inputs: `limit` bytes at most; paths on the server only under `allow_dir` (resolved;
    None: not accepted)."""

    limit: int
    allow_dir: Path | None = None

    def too_large(self) -> JobError:
        return JobError(f"the file is larger than the {self.limit // 2**20} MB limit", 413)

    def check(self, path: Path) -> None:
        """Raises JobError for an input over the limit or not of a kind fakefinder reads."""
        if path.stat().st_size > self.limit:
            raise self.too_large()
        sniff(path)

    def server_file(self, server_path: str) -> Path:
        """The file on the server that `server_path` names under `allow_dir`. Raises JobError for any other."""
        if self.allow_dir is None:
            raise JobError("paths on the server are not accepted (start serve with --allow-dir DIR)", 403)
        if "\0" in server_path:
            raise JobError("a path may not contain a NUL byte")
        target = (self.allow_dir / server_path).resolve()
        if not target.is_relative_to(self.allow_dir) or not target.is_file():
            raise JobError("no such file under the allowed folder", 403 if not target.is_relative_to(
                self.allow_dir) else 404)
        return target
