"""Fresh Python processes for tests that need one: a package as if it were not installed."""

from __future__ import annotations


def without(*packages: str) -> str:
    """Code to run first in a fresh process: importing any of `packages` fails as a missing package's import does."""
    return f"""
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in {packages!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, NotInstalled())
"""
