from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakefinder import PrepareSettings, prepare, synth


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    """A small synthetic DFDC collection: 5 real videos and one fake of each, every manipulation method."""
    return synth(tmp_path_factory.mktemp("collection") / "syn", videos=10, seed=3, seconds=3)


@pytest.fixture(scope="session")
def prepared(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return prepare(collection.out, out, settings=PrepareSettings(), workers=1, progress=False)


@pytest.fixture(scope="session")
def metadata(collection) -> dict:
    return json.loads(Path(collection.metadata_path).read_text())
