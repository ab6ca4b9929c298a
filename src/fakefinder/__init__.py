"""fakefinder: tell real videos from deepfakes.

The names a user needs are importable from here; heavy modules load on first use so that
`fakefinder --help` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.2.0"

_EXPORTS = {
    # settings, declared once
    "PrepareSettings": "config", "TrainConfig": "config", "TuneSettings": "config", "ServeSettings": "config",
    # stages
    "synth": "synthetic", "SynthResult": "synthetic",
    "discover": "collection", "Collection": "collection", "VideoItem": "collection",
    "prepare": "preparation", "PrepareResult": "preparation", "process_video": "preparation",
    "load_dataset": "dataset", "PreparedDataset": "dataset",
    "fit_detector": "training", "TrainedDetector": "training",
    "train": "experiment", "TrainResult": "experiment",
    "tune": "tuning", "TuneResult": "tuning",
    "evaluate": "inference", "EvaluateResult": "inference", "predict": "inference",
    "study": "study", "StudyResult": "study", "demo": "quickstart", "DemoResult": "quickstart",
    # models and verdicts
    "load_detector": "detector", "Detector": "detector", "VideoResult": "detector", "FrameResult": "detector",
    "FaceResult": "detector", "TrackResult": "detector",
    "load_model": "modelfile", "DeepfakeModel": "modelfile", "ModelCard": "modelcard",
    "create_backbone": "backbones", "backbone_names": "backbones",
    # plug-in points
    "Tracker": "tracking", "resolve_tracker": "tracking", "Executor": "executors", "LocalExecutor": "executors",
    "Progress": "progress", "create_detector": "faces", "FaceDetector": "faces", "Box": "faces",
    "sample_frames": "frames", "Frame": "frames",
    "list_runs": "runs", "run_report": "report", "study_report": "report",
    "FakefinderError": "errors", "UsageError": "errors", "InputError": "errors", "OptionError": "errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from .backbones import backbone_names, create_backbone
    from .collection import Collection, VideoItem, discover
    from .config import PrepareSettings, ServeSettings, TrainConfig, TuneSettings
    from .dataset import PreparedDataset, load_dataset
    from .detector import Detector, FaceResult, FrameResult, TrackResult, VideoResult, load_detector
    from .errors import FakefinderError, InputError, OptionError, UsageError
    from .executors import Executor, LocalExecutor
    from .experiment import TrainResult, train
    from .faces import Box, FaceDetector, create_detector
    from .frames import Frame, sample_frames
    from .inference import EvaluateResult, evaluate, predict
    from .modelcard import ModelCard
    from .modelfile import DeepfakeModel, load_model
    from .preparation import PrepareResult, prepare, process_video
    from .progress import Progress
    from .quickstart import DemoResult, demo
    from .report import run_report, study_report
    from .runs import list_runs
    from .study import StudyResult, study
    from .synthetic import SynthResult, synth
    from .tracking import Tracker, resolve_tracker
    from .training import TrainedDetector, fit_detector
    from .tuning import TuneResult, tune


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fakefinder' has no attribute {name!r}")
