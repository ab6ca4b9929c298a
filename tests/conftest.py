from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakefinder import Compute, PrepareSettings, SynthSettings, prepare, synth

# An unmarked test belongs to the fast tier (`bootstrap.py test --fast`): one that runs longer than this is named at
# the end of the run, to be marked `slow` (or made faster). A warning, not a failure: 2 shared cores are noisy.
FAST_TEST_S = 10.0
_over: list[tuple[float, str]] = []


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" and report.duration > FAST_TEST_S and not {"slow", "services"} & set(report.keywords):
        _over.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if _over:
        terminalreporter.section("unmarked tests slower than the fast tier allows")
        for seconds, nodeid in sorted(_over, reverse=True):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}: mark it slow, or make it faster")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """fakefinder's cache folder (ONNX exports of model files, `models.onnxcache`) in the session's tmp, never the
    user's; subprocesses inherit it."""
    import os

    from fakefinder._files import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("fakefinder-cache"))
    yield Path(os.environ[CACHE_ENV])
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    """A small synthetic DFDC collection: 5 real videos and one fake of each, every manipulation method."""
    return synth(tmp_path_factory.mktemp("collection") / "syn", SynthSettings(videos=10, seed=3, seconds=3))


@pytest.fixture(scope="session")
def prepared(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return prepare(collection.out, out, settings=PrepareSettings(), compute=Compute(processes=1))


@pytest.fixture(scope="session")
def metadata(collection) -> dict:
    return json.loads(Path(collection.metadata_path).read_text())


@pytest.fixture(scope="session")
def learnable(tmp_path_factory):
    """A collection whose fakes a frozen ImageNet base can learn: full-face swaps and resampled faces.

    15 real videos and 15 fakes, 2 s each, prepared at 2 fps: 120 crops, 3 source groups per test part.
    """
    root = tmp_path_factory.mktemp("learnable")
    made = synth(root / "swap", SynthSettings(videos=30, seed=5, seconds=2, sizes=((640, 360),),
                                              methods=("swap", "resample")))
    return prepare(made.out, root / "prepared", settings=PrepareSettings(fps=2), compute=Compute(processes=2))


@pytest.fixture(scope="session")
def tracking(tmp_path_factory) -> str:
    """One MLflow SQLite store for the session (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def baseline(learnable, tracking):
    """The default detector trained once on `learnable` and tracked: what many tests score, load or serve."""
    from fakefinder import TrainSettings, train

    return train(learnable.out, TrainSettings(), tracking=tracking)
