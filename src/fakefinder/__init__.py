"""fakefinder: tell real videos from deepfakes.

The names a user needs are importable from here; heavy modules load on first use so that
`fakefinder --help` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ._version import __version__

# Where each public name lives: modules load on first use, so `import fakefinder` stays light.
_LOCATIONS = {
    # settings, declared once
    "config": ("PrepareSettings", "TrainSettings", "TrainConfig", "TuneSettings", "ServeSettings"),
    "errors": ("FakefinderError", "UsageError", "InputError", "OptionError"),
    "progress": ("Progress",),
    # where and how a job runs, beside what it computes
    "hardware": ("Compute",),
    # the stages, in the order data flows
    "data.synthetic": ("synth", "SynthSettings", "SynthResult"),
    "data.collection": ("discover", "CollectionOptions", "Collection", "VideoItem"),
    "data.frames": ("sample_frames", "Frame"),
    "data.faces": ("create_face_detector", "FaceDetector", "Box"),
    "data.preparation": ("prepare", "PrepareResult", "process_video"),
    "data.dataset": ("load_dataset", "PreparedDataset"),
    "models.backbones": ("create_backbone", "backbone_names"),
    "models.modelcard": ("ModelCard",),
    "models.modelfile": ("load_model", "DeepfakeModel"),
    "training.core": ("fit_detector", "RunContext", "TrainedDetector"),
    "training.experiment": ("TrainResult",),
    "inference.detector": ("load_detector", "LoadOptions", "Detector", "VideoResult", "FrameResult", "FaceResult",
                           "TrackResult"),
    "inference.evaluation": ("evaluate", "EvaluateResult", "predict"),
    "inference.recalibration": ("calibrate", "combine", "CalibrateResult"),
    "tuning.search": ("tune", "TuneResult"),
    "workflows.training": ("train", "CombinedTrainResult"),
    "workflows.study": ("study", "StudyResult"),
    "workflows.demo": ("demo", "DemoResult"),
    # plug-in points and what is read back
    "scale.executors": ("Executor", "LocalExecutor"),
    "tracking.trackers": ("Tracker", "Recording", "resolve_tracker"),
    "tracking.runs": ("list_runs",),
    "tracking.report": ("run_report", "study_report"),
}
_EXPORTS = {name: module for module, names in _LOCATIONS.items() for name in names}
__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from .config import PrepareSettings, ServeSettings, TrainConfig, TrainSettings, TuneSettings
    from .data.collection import Collection, CollectionOptions, VideoItem, discover
    from .data.dataset import PreparedDataset, load_dataset
    from .data.faces import Box, FaceDetector, create_face_detector
    from .data.frames import Frame, sample_frames
    from .data.preparation import PrepareResult, prepare, process_video
    from .data.synthetic import SynthResult, SynthSettings, synth
    from .errors import FakefinderError, InputError, OptionError, UsageError
    from .hardware import Compute
    from .inference.detector import (
        Detector,
        FaceResult,
        FrameResult,
        LoadOptions,
        TrackResult,
        VideoResult,
        load_detector,
    )
    from .inference.evaluation import EvaluateResult, evaluate, predict
    from .inference.recalibration import CalibrateResult, calibrate, combine
    from .models.backbones import backbone_names, create_backbone
    from .models.modelcard import ModelCard
    from .models.modelfile import DeepfakeModel, load_model
    from .progress import Progress
    from .scale.executors import Executor, LocalExecutor
    from .tracking.report import run_report, study_report
    from .tracking.runs import list_runs
    from .tracking.trackers import Recording, Tracker, resolve_tracker
    from .training.core import RunContext, TrainedDetector, fit_detector
    from .training.experiment import TrainResult
    from .tuning.search import TuneResult, tune
    from .workflows.demo import DemoResult, demo
    from .workflows.study import StudyResult, study
    from .workflows.training import CombinedTrainResult, train


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fakefinder' has no attribute {name!r}")
