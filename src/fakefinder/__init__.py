"""fakefinder: tell real videos from deepfakes.

The names a user needs are importable from here; heavy modules load on first use so that
`fakefinder --help` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "prepare": "preparation", "PrepareSettings": "preparation", "PrepareResult": "preparation",
    "process_video": "preparation",
    "discover": "collection", "Collection": "collection", "VideoItem": "collection",
    "synth": "synthetic", "SynthResult": "synthetic",
    "create_detector": "faces", "FaceDetector": "faces", "Box": "faces",
    "sample_frames": "frames", "Frame": "frames",
    "demo": "quickstart", "DemoResult": "quickstart",
    "train": "experiment", "TrainResult": "experiment", "TrainConfig": "training",
    "load_model": "modelfile", "DeepfakeModel": "modelfile", "create_backbone": "backbones",
    "tune": "tuning", "TuneResult": "tuning", "list_runs": "runs",
    "run_report": "report", "study_report": "report",
    "FakefinderError": "errors", "UsageError": "errors", "InputError": "errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from .backbones import create_backbone
    from .collection import Collection, VideoItem, discover
    from .experiment import TrainResult, train
    from .modelfile import DeepfakeModel, load_model
    from .report import run_report, study_report
    from .runs import list_runs
    from .training import TrainConfig
    from .tuning import TuneResult, tune
    from .quickstart import DemoResult, demo
    from .errors import FakefinderError, InputError, UsageError
    from .faces import Box, FaceDetector, create_detector
    from .frames import Frame, sample_frames
    from .preparation import PrepareResult, PrepareSettings, prepare, process_video
    from .synthetic import SynthResult, synth


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fakefinder' has no attribute {name!r}")
