"""One file per trained model: safetensors tensors plus the model card (see `modelcard`) as its header.

A frozen base is referenced by its weights' digest rather than stored; a fine-tuned one is stored. Loading
never unpickles, checks every header value against the stored tensors' shapes before allocating anything, and
also accepts the published detectors that `checkpoints` knows, as they were downloaded. A file may also carry
several detectors, each with its own card (`CombinedModel`; see `combined`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _files
from ..errors import OptionError, UsageError, one_line
from ..metrics import finite_scores
from .backbones import Backbone
from .backbones._weights import finite_tensors
from .modelcard import BaseCard, Calibration, HeadSpec, ModelCard, Verdict
from .scoring import ScoresFromLogits

HEADER_KEY = "fakefinder"


@dataclass
class DeepfakeModel(ScoresFromLogits):
    """A base, a head and the card that says how to use them: face crops in, calibrated P(fake) out. A
    `scoring.DifferentiableModel` (hence a `ScoringModel`)."""

    backbone: Backbone
    head: object  # head.Head
    card: ModelCard

    @property
    def device(self):
        return next(self.head.parameters()).device

    def face_logits(self, images: list[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Uncalibrated logits for BGR uint8 face crops of any size."""
        import torch

        from .head import pooled

        self.backbone.module.eval()
        self.head.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = self.backbone.preprocess(images[start:start + batch_size]).to(self.device)
                maps = self.backbone.features(x, precision=self.card.precision)
                out.append(self.head(pooled(maps, self.card.head.pool)).double().cpu().numpy())
        return finite_scores(np.concatenate(out) if out else np.zeros(0))

    def to(self, device: str) -> DeepfakeModel:
        self.backbone.module.to(device)
        self.head.to(device)
        return self


@dataclass
class CombinedModel(ScoresFromLogits):
    """A `scoring.ScoringModel` made of detectors. Not a `DifferentiableModel`: a heatmap would have to choose a
    member."""

    members: tuple[DeepfakeModel, ...]
    card: ModelCard

    @property
    def device(self):
        return self.members[0].device

    def face_logits(self, images: list[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """The members' calibrated logits per face, combined by the card's rule (the largest, or their mean)."""
        if not images:
            return np.zeros(0)
        reduce = np.max if self.card.combine_rule == "max" else np.mean
        return reduce([m.card.calibration.logit(m.face_logits(images, batch_size=batch_size)) for m in self.members],
                      axis=0)

    def to(self, device: str) -> CombinedModel:
        for m in self.members:
            m.to(device)
        return self


def _tensors(model: DeepfakeModel, prefix: str = "") -> dict:
    tensors = {f"{prefix}head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    if model.card.base.included:
        tensors.update({f"{prefix}base.{k}": v.detach().cpu().contiguous()
                        for k, v in model.backbone.module.state_dict().items()})
    return tensors


def save_model(path: str | Path, model: DeepfakeModel | CombinedModel) -> Path:
    """Write the model file (a DeepfakeModel or a CombinedModel) atomically, readable as any file the user
    creates (umask applies)."""
    from safetensors.torch import save_file

    path = Path(path)
    header = json.dumps(readable_card(model.card, path).to_json())
    tensors = ({k: v for i, m in enumerate(model.members) for k, v in _tensors(m, f"members.{i}.").items()}
               if isinstance(model, CombinedModel) else _tensors(model))
    with _files.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: header})
        os.chmod(tmp, 0o666 & ~_files.umask())  # safetensors recreates the file with mode 0600
    return path


def readable_card(card: ModelCard, path: Path) -> ModelCard:
    """`card` when its reader takes it back as it is written; else UsageError (one line): no command writes a model
    file that no command can load (a face fill of inf from damaged meshes, say)."""
    try:
        ModelCard.from_json(json.loads(json.dumps(card.to_json())))
    except (UsageError, ValueError) as exc:
        raise UsageError(f"{path}: not written: its model card would not load ({one_line(exc, typed=False)})") from None
    return card


def _tensor_shapes(path: Path) -> tuple[dict | None, dict[str, tuple[int, ...]]]:
    """(header dict or None, name -> shape) without reading any tensor data."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return (json.loads(meta[HEADER_KEY]) if HEADER_KEY in meta else None), shapes


def read_card(path: str | Path) -> ModelCard:
    """The card of a fakefinder model file. Raises UsageError (one line, naming the file)."""
    path = Path(path)
    try:
        header, _ = _tensor_shapes(path)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say so in one line
        raise UsageError(f"{path}: not a fakefinder model file ({type(exc).__name__})") from None
    if header is None:
        raise UsageError(f"{path}: not a fakefinder model file (no model card)")
    try:
        return ModelCard.from_json(header)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _expected_shapes(path: Path, card: ModelCard, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Every tensor a single detector's card implies, with the shape it implies."""
    import torch

    from .backbones import get_spec
    from .head import in_features

    spec = get_spec(card.base.backbone)
    want = in_features(spec.channels, spec.feature_side(card.base.input_size), card.head.pool)
    if card.head.in_features != want:
        raise UsageError(f"{path}: {prefix}head.in_features {card.head.in_features} does not fit {spec.name} at "
                         f"{card.base.input_size} px with {card.head.pool} pooling ({want})")
    expected = {f"{prefix}head.{k}": v for k, v in card.head.shapes().items()}
    if card.base.included:
        with torch.device("meta"):
            module = spec.build()
        expected.update({f"{prefix}base.{k}": tuple(v.shape) for k, v in module.state_dict().items()})
    return expected


def _check_shapes(path: Path, card: ModelCard, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor the card implies (each member's, for a combined model), with the shape it implies, before
    anything is allocated."""
    parts = [(m, f"members.{i}.") for i, m in enumerate(card.members)] or [(card, "")]
    expected = {k: v for m, prefix in parts for k, v in _expected_shapes(path, m, prefix).items()}
    for name, shape in expected.items():
        if shapes.get(name) != shape:
            found = "missing" if name not in shapes else f"shape {shapes[name]}"
            raise UsageError(f"{path}: tensor {name} is {found}, the model card implies {shape}")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise UsageError(f"{path}: unexpected tensor {extra[0]} (the file does not match its model card)")


def load_model(path: str | Path, *, device: str = "cpu", base_weights: str | Path | None = None
               ) -> DeepfakeModel | CombinedModel:
    """A fakefinder model file (a DeepfakeModel, or a CombinedModel for a file of several detectors), or a
    published detector checkpoint (`checkpoints`), ready on `device`.

    A model on a frozen base refers to the base's weights instead of storing them; `base_weights` says where
    that file is now when it has moved since training (its digest must match). Raises UsageError.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: model file not found")
    if path.suffix != ".safetensors" or _is_foreign(path):
        return _from_checkpoint(path).to(device)
    card = read_card(path)
    _check_shapes(path, card, _tensor_shapes(path)[1])
    tensors = finite_tensors(load_file(str(path)), path)
    if card.members:
        members = tuple(_assemble(path, m, {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)},
                                  base_weights) for i, m in enumerate(card.members) for p in [f"members.{i}."])
        return CombinedModel(members, card).to(device)
    return _assemble(path, card, tensors, base_weights).to(device)


def _assemble(path: Path, card: ModelCard, tensors: dict, base_weights: str | Path | None) -> DeepfakeModel:
    """A single detector from its card and its tensors (named base.* and head.*), on the CPU."""
    from .backbones import create_backbone, file_digest
    from .head import Head

    base = card.base
    common = dict(input_size=base.input_size, normalization=base.normalization)
    if base.included:
        backbone = create_backbone(base.backbone, weights="none", **common)
        backbone.module.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("base.")})
        backbone.weights, backbone.weights_digest = base.weights, base.weights_digest
    else:
        source = str(base_weights or base.weights_path or base.weights)
        if source not in ("imagenet", "none"):
            if not Path(source).is_file():
                raise OptionError("base_weights", f"must name the file with sha256 {base.weights_digest[:12]}...: "
                                                  f"{path}'s {base.backbone} base weights {source} are not there")
            if file_digest(source) != base.weights_digest:  # before parsing it: the header may name any file
                raise UsageError(f"{path}: trained on {base.backbone} weights {base.weights_digest[:12]}, but "
                                 f"{source} has {file_digest(source)[:12]}")
        backbone = create_backbone(base.backbone, weights=source, seed=card.seed, **common)
        if backbone.weights_digest != base.weights_digest:
            raise UsageError(f"{path}: trained on {base.backbone} weights {base.weights_digest[:12]}, but {source} "
                             f"has {backbone.weights_digest[:12]}")
    head = Head(card.head)
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    return DeepfakeModel(backbone, head.eval(), card)


def _is_foreign(path: Path) -> bool:
    """A .safetensors file without a model card (e.g. a published checkpoint converted to safetensors)."""
    try:
        return _tensor_shapes(path)[0] is None
    except Exception:  # noqa: BLE001 - read_card reports what is wrong with it
        return False


def _from_checkpoint(path: Path) -> DeepfakeModel:
    """A published detector as a model: its base and its classifier as a one-logit head, run as its authors
    ran it (input size, normalisation, video rule), verdict at 0.5, uncalibrated."""
    import torch

    from ..config import PrepareSettings
    from .backbones import create_backbone, file_digest, get_spec, read_checkpoint
    from .head import Head

    checkpoint = read_checkpoint(path)
    layout = checkpoint.layout
    if layout is None:
        raise UsageError(f"{path}: neither a fakefinder model file nor a published detector that fakefinder "
                         "knows (DFDC winner, FaceForensics++ Xception)")
    name = checkpoint.backbone()
    spec = get_spec(name)
    backbone = create_backbone(name, weights=path, input_size=layout.input_size, normalization=layout.normalization)
    weight, bias = checkpoint.head()
    head_spec = HeadSpec(in_features=spec.channels, n_layers=0, pool="avg")
    head = Head(head_spec)
    with torch.no_grad():
        head.layers[0].weight.copy_(weight.float())
        head.layers[0].bias.copy_(bias.float())
    card = ModelCard(
        base=BaseCard(name, path.name, file_digest(path), layout.input_size, layout.normalization, True, None),
        head=head_spec, calibration=Calibration(), verdict=Verdict(0.5, "fixed", layout.video_rule),
        precision="fp32", prepare=PrepareSettings(**layout.prepare), source=layout.name)
    return DeepfakeModel(backbone, head.eval(), card)
