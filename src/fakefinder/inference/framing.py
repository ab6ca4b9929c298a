"""How a model's faces sit in their crops, and how to cut a collection's faces alike: a detector scores the framing
it was trained on, and faces cut tighter or looser meet it as a change of scale. `predict` reads a video with
`verdict_settings`, and `prepare --like MODEL` prepares a collection with the same settings, so that `evaluate`
scores the faces a verdict would."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import PrepareSettings
from ..errors import UsageError
from .locate import resolve_model_file

if TYPE_CHECKING:
    from ..models.modelcard import ModelCard

# The settings that decide how a face is framed in its crop.
FRAMING = ("detector", "margin", "size", "align")


def verdict_settings(card: ModelCard) -> PrepareSettings:
    """How a video is read for a verdict of the model of `card`: sampled and cut as its training crops were, every
    face kept (a fake may swap one of two people); for a model trained on a collection of face crops (`--detector
    none`), faces found by BlazeFace and cut with the margin that makes a face fill its crop as it filled those."""
    settings = (card.prepare or PrepareSettings()).replace(faces="all")
    if settings.detector == "none" and card.face_fill:
        from ..data.faces import BlazeFaceDetector
        from ..data.landmarks import margin_for_fill

        settings = settings.replace(detector="blazeface", margin=round(
            margin_for_fill(BlazeFaceDetector.MESH_FILL, 0.0, card.face_fill), 3))
    return settings


def settings_like(model: str | Path, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """The preparation settings under which a collection's faces are those a verdict of `model` (a model file or the
    run that logged one) scores: `verdict_settings`. Raises UsageError where its card does not say how its training
    faces were framed."""
    path = resolve_model_file(model, tracking_uri=tracking_uri)
    if path.suffix == ".onnx":
        from ..models.onnxfile import read_onnx_card

        card = read_onnx_card(path)
    else:
        from ..models.modelfile import read_card

        card = read_card(path)
    if card.prepare is None:
        raise UsageError(f"{path}: its card does not say how its training faces were cropped, so there is nothing to "
                         "frame like (give --detector and --margin)")
    if card.prepare.detector == "none" and not card.face_fill:
        raise UsageError(f"{path}: trained on face crops whose fill was never measured (no face mesh), so the margin "
                         "that frames videos alike is unknown (give --margin)")
    return dataclasses.asdict(verdict_settings(card))
