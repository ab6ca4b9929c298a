"""Files, safely: atomic writes (a reader, or a rerun after SIGKILL, sees the old file or the new one, never half),
plain names where a name comes from outside, streamed digests, SQLite URLs, the user's cache folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

_IMPORT_UMASK = os.umask(0)
os.umask(_IMPORT_UMASK)
_TMP_SUFFIX = ".tmp"
CACHE_ENV = "FAKEFINDER_CACHE"  # fakefinder's cache folder (ONNX exports and conversions go in its onnx/)


def cache_root() -> Path:
    """fakefinder's cache folder: $FAKEFINDER_CACHE, else $XDG_CACHE_HOME/fakefinder, else ~/.cache/fakefinder."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "fakefinder"


def umask() -> int:
    """The process's umask now, read without changing it where Linux tells it (/proc), else as at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return _IMPORT_UMASK


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_image(path: str | Path, flags: int | None = None):
    """An image file as OpenCV decodes it (BGR uint8 unless `flags` say otherwise), read as bytes by Python: OpenCV's
    own `imread` crashes the process (SIGSEGV) on a name that is not UTF-8. None when it cannot be read or decoded."""
    import cv2
    import numpy as np

    try:
        data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    except OSError:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR if flags is None else flags) if data.size else None


def encode_image(image, suffix: str = ".png") -> bytes:
    """`image` encoded by OpenCV as `suffix` says; raises OSError when it cannot be (write the bytes with
    `write_bytes`: OpenCV's own `imwrite` shares `imread`'s trouble with names)."""
    import cv2

    ok, data = cv2.imencode(suffix, image)
    if not ok:
        raise OSError(f"cannot encode an image as {suffix}")
    return data.tobytes()


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write `path` with a library function that takes a file path (e.g. pyarrow)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sweep_temporaries(folder: str | Path) -> None:
    """Delete the temporary files that writes killed mid-way left in `folder`; call it under `exclusive`."""
    for tmp in Path(folder).glob(f".*{_TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(lock: str | Path, what: str) -> Iterator[None]:
    """Hold an advisory lock so two runs never write one folder at once; the OS drops it if the process dies.

    Raises UsageError at once if another process holds it. A no-op where fcntl is missing (Windows).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UsageError(f"{lock}: another {what} is writing this folder ({holder}); wait for it or stop it"
                             ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # MLflow's are 32 hex digits


def safe_run_id(run_id: str) -> str:
    """`run_id`, checked to be a plain name: it becomes a file name (the model, a cache folder), and a model
    file's header, which carries it, is untrusted input."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"not a run id: {run_id!r} (letters, digits, '-' and '_' only)")
    return run_id


def sha256_file(path: str | Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_digest(value, *, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `value` as JSON with sorted keys: a settings object's key,
    the same in every process and run."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite database file (absolute, so that any working directory finds it)."""
    return f"sqlite:///{Path(path).resolve()}"
