"""What the inference stage asks of a model, whatever runs it: one protocol (PEP 544), `ScoringModel`.

The PyTorch model (`modelfile.DeepfakeModel`) and the ONNX Runtime one (`onnxfile.OnnxModel`) both implement it,
structurally, and `inference` speaks to it alone. A model whose base and head are PyTorch modules is also a
`DifferentiableModel`: gradients flow through it (Grad-CAM heatmaps), and a frozen base's features can come from
the feature cache. `ScoresFromLogits` writes once what both derive from their card and their face logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .backbones import Backbone
    from .modelcard import ModelCard


@runtime_checkable
class ScoringModel(Protocol):
    """Face crops in, logits and calibrated P(fake) out, with the card that says how to use them."""

    card: ModelCard

    @property
    def threshold(self) -> float:
        """The card's video verdict threshold on calibrated P(fake)."""
        ...

    def face_logits(self, images: list[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Uncalibrated logits for BGR uint8 face crops of any size. Raises InputError for a non-finite score."""
        ...

    def predict_faces(self, images: list[np.ndarray]) -> np.ndarray:
        """Calibrated P(fake) for BGR uint8 face crops."""
        ...

    def file_logits(self, paths: Sequence[str | Path], *, chunk: int = 256) -> np.ndarray:
        """Logits for face-crop image files, read `chunk` at a time so that memory stays bounded."""
        ...


@runtime_checkable
class DifferentiableModel(ScoringModel, Protocol):
    """A scoring model whose base and head are PyTorch modules on `device`: what Grad-CAM and the feature cache
    need. ONNX Runtime gives no gradients: an ONNX model is a `ScoringModel` only."""

    backbone: Backbone
    head: object  # head.Head

    @property
    def device(self) -> object:
        """The torch.device of the base and the head."""
        ...


class ScoresFromLogits:
    """The members of a `ScoringModel` that follow from its `card` and its `face_logits`, written once: a model
    class that has those two inherits the rest."""

    card: ModelCard

    @property
    def threshold(self) -> float:
        return self.card.verdict.threshold

    def predict_faces(self, images: list[np.ndarray]) -> np.ndarray:
        """Calibrated P(fake) for BGR uint8 face crops."""
        return self.card.calibration.apply(self.face_logits(images))

    def file_logits(self, paths: Sequence[str | Path], *, chunk: int = 256) -> np.ndarray:
        """Logits for face-crop image files, read `chunk` at a time so that memory stays bounded."""
        from ..data.crops import load_crops

        return np.concatenate([self.face_logits(load_crops(paths[s:s + chunk]))
                               for s in range(0, len(paths), chunk)] or [np.zeros(0)])
