"""The default runtime of a verdict: a `.safetensors` model run by ONNX Runtime at fp32, through an export made once
and kept in the user's cache folder by the model file's digest.

    $FAKEFINDER_CACHE/onnx/<sha256 of the model file>.onnx     (default $XDG_CACHE_HOME/fakefinder, ~/.cache/...)

A cached export is loaded as any `.onnx` file is (`onnxfile.load_onnx`: format, card and graph digest, and what
else it checks), and its card must be the model file's; one that is refused is exported again. The export is
written atomically; a cache that cannot be written (read-only, full) leaves the export in memory. Where the export
is cached, loading reads the model file's header as JSON and never imports PyTorch.

Which runtime a model gets when none is asked for (`default_runtime`): ONNX Runtime where it is installed, the
model is a fakefinder model file whose card allows fp32 (its precision is fp32, or its training asked for `auto`
and the machine chose), and the device is the CPU; otherwise PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from .. import _files
from .._files import cache_root
from ..errors import UsageError
from .modelcard import ModelCard
from .modelfile import HEADER_KEY

_MAX_HEADER = 100 << 20  # safetensors' own limit on its JSON header


def cached_path(digest: str) -> Path:
    """Where the export of the model file with sha256 `digest` is kept."""
    return cache_root() / "onnx" / f"{digest}.onnx"


def file_card(path: str | Path) -> ModelCard | None:
    """The card of a fakefinder `.safetensors` model file, read as JSON without PyTorch (safetensors: an 8-byte
    little-endian length, then a JSON header whose __metadata__ holds the card); None for a file without one (a
    published checkpoint, another format). Raises UsageError for a card that does not parse."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= _MAX_HEADER:
                return None
            header = json.loads(f.read(size))
        meta = header.get("__metadata__") or {}
        text = meta.get(HEADER_KEY) if isinstance(meta, dict) else None
        if not isinstance(text, str):
            return None
        card = json.loads(text)
    except (OSError, ValueError, AttributeError):
        return None  # not a safetensors file fakefinder can read as JSON: the PyTorch loader says what is wrong
    try:
        return ModelCard.from_json(card)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def onnx_installed() -> bool:
    """Whether ONNX Runtime and ONNX can be imported (found without importing them)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
    except (ImportError, ValueError):  # a finder that refuses the name, a broken install
        return False


def fp32_allowed(card: ModelCard) -> bool:
    """Whether the card lets its base compute at fp32: it did, or its training asked for `auto` (a machine's
    choice, not the model's); a base trained at a precision asked for by name keeps it (PyTorch)."""
    return card.precision == "fp32" or card.train.get("precision", "auto") == "auto"


def _may_have_gpu() -> bool:
    """False where this machine surely has no CUDA or ROCm GPU, found without importing PyTorch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version",
                                          "/dev/kfd"))


def on_cpu(device: str) -> bool:
    """Whether `device` (auto, cpu, cuda, ...) is the CPU; imports PyTorch only where a GPU may be present."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    if not _may_have_gpu():
        return True
    from ..hardware import resolve_device

    return resolve_device(device) == "cpu"


def default_runtime(path: Path, device: str) -> str:
    """The runtime a model file gets when none is asked for: "onnx" or "torch" (see the module's docstring)."""
    if not onnx_installed():
        return "torch"
    try:
        card = file_card(path)
    except UsageError:
        return "torch"  # the PyTorch loader refuses it, in its own words
    return "onnx" if card is not None and fp32_allowed(card) and on_cpu(device) else "torch"


def load_cached(path: str | Path, *, base_weights: str | Path | None = None):
    """The `.safetensors` model at `path` as an `onnxfile.OnnxModel`: its cached export when one is there and
    passes `load_onnx`'s checks with the file's own card, else exported now (seconds; PyTorch) and cached, in
    memory only where the cache cannot be written. Raises UsageError for a model that cannot be loaded or
    exported."""
    from .onnxfile import OnnxModel, detector_graph, load_onnx

    path = Path(path)
    card = file_card(path)
    target = cached_path(_files.sha256_file(path))
    if target.is_file():
        try:
            cached = load_onnx(target)
        except UsageError:
            cached = None  # damaged or foreign: exported again over it
        if cached is not None and cached.card == card:
            return cached
    from .modelfile import load_model

    model = load_model(path, device="cpu", base_weights=base_weights)
    proto = detector_graph(model)
    try:
        _files.write_bytes(target, proto.SerializeToString())
    except OSError:
        target = None  # a read-only or full cache: this process keeps the export in memory
    return OnnxModel(proto, model.card, path=target)
