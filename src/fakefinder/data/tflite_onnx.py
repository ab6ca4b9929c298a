"""A TFLite network on ONNX Runtime: converted once by tflite2onnx and kept in the user's cache folder.

    $FAKEFINDER_CACHE/onnx/tflite-<sha256 of the .tflite file>.onnx   (default $XDG_CACHE_HOME/fakefinder, ...)

BlazeFace runs about 1.9x faster on ONNX Runtime than on OpenCV's DNN module, one thread each, with the same
outputs to 1e-4 (README, "Face detection on ONNX Runtime"). Where ONNX Runtime or tflite2onnx is missing, or a
network does not convert (tflite2onnx 0.4.1 fails on the face mesh), `session` gives None and the caller runs
OpenCV's DNN module, with the same detections. The conversion is written atomically; a cache that cannot be
written keeps it in memory. Loading a cached conversion imports neither tflite2onnx nor the onnx package.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

from .._files import cache_root, sha256_file, write_bytes

_UNCONVERTIBLE: set[str] = set()  # digests tflite2onnx failed on in this process: not tried again


def cached_path(digest: str) -> Path:
    return cache_root() / "onnx" / f"tflite-{digest}.onnx"


def session(path: str | Path):
    """An ONNX Runtime session on one thread running the TFLite network at `path`, or None (see the module)."""
    if not _installed("onnxruntime"):
        return None
    digest = sha256_file(path)
    if digest in _UNCONVERTIBLE:
        return None
    target = cached_path(digest)
    if target.is_file():
        found = _session(target.read_bytes())
        if found is not None:
            return found  # else damaged: converted again over it
    data = _convert(Path(path))
    made = _session(data) if data is not None else None
    if made is None:
        _UNCONVERTIBLE.add(digest)
        return None
    try:
        write_bytes(target, data)
    except OSError:
        pass  # a read-only or full cache: this process keeps the conversion in memory
    return made


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, a broken install
        return False


def _session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # it runs beside the decoder and the network
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any file ONNX Runtime refuses is converted again (or not used)
        return None


def _convert(path: Path) -> bytes | None:
    """The network as ONNX bytes, or None where tflite2onnx is missing or cannot convert it."""
    try:
        import tflite2onnx
    except ImportError:
        return None
    logger = logging.getLogger("tflite2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns once per fp16 tensor; the outputs are checked against OpenCV's in tests
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "net.onnx"
            tflite2onnx.convert(str(path), str(out))
            return out.read_bytes()
    except Exception:  # noqa: BLE001 - an operator or layout tflite2onnx does not handle: OpenCV runs it
        return None
    finally:
        logger.setLevel(level)
