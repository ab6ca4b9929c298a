"""One file per trained model: safetensors tensors plus a JSON header that says how to use them.

The header carries the base (name, weights and their digest, input size, normalisation), the pooling, the
head's shape, the threshold, the label convention (1 = FAKE; outputs are P(fake)) and the preparation
settings of the training data, so `predict` samples and crops new videos the same way. A frozen base is
referenced by its weights' digest rather than stored; a fine-tuned one is stored. Loading never unpickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import __version__, _atomic
from .backbones import Backbone, create_backbone
from .errors import UsageError
from .head import Head, HeadSpec

FORMAT = "fakefinder-model/1"


@dataclass
class DeepfakeModel:
    """A base, its pooling and a head: face crops in, P(fake) out."""

    backbone: Backbone
    head: Head
    pool: str
    threshold: float = 0.5
    precision: str = "fp32"
    header: dict | None = None

    def predict_faces(self, images: list[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """P(fake) for BGR uint8 face crops of any size."""
        import torch

        from .features import pooled

        device = next(self.head.parameters()).device
        self.backbone.module.eval()
        self.head.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = self.backbone.preprocess(images[start:start + batch_size]).to(device)
                maps = self.backbone.features(x, precision=self.precision)
                out.append(torch.sigmoid(self.head(pooled(maps, self.pool))).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def predict_files(self, paths, *, chunk: int = 256) -> np.ndarray:
        """P(fake) for face-crop image files, read `chunk` at a time so that memory stays bounded."""
        from .features import load_crops

        return np.concatenate([self.predict_faces(load_crops(paths[s:s + chunk]))
                               for s in range(0, len(paths), chunk)] or [np.zeros(0)])

    def to(self, device: str) -> DeepfakeModel:
        self.backbone.module.to(device)
        self.head.to(device)
        return self


def save_model(path: str | Path, model: DeepfakeModel, *, include_base: bool, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    header = {"format": FORMAT, "fakefinder": __version__, "label": "1 = FAKE; outputs are P(fake)",
              "base": model.backbone.key, "pool": model.pool, "precision": model.precision,
              "head": asdict(model.head.spec),
              "threshold": model.threshold, "includes_base": include_base, **(extra or {})}
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    if include_base:
        tensors.update({f"base.{k}": v.detach().cpu().contiguous()
                        for k, v in model.backbone.module.state_dict().items()})
    with _atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fakefinder": json.dumps(header)})
    model.header = header
    return path


def read_header(path: str | Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["fakefinder"])
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{path}: not a fakefinder model file ({type(exc).__name__})") from None
    if header.get("format") != FORMAT:
        raise UsageError(f"{path}: unsupported model format {header.get('format')!r}")
    return header


def load_model(path: str | Path, *, device: str = "cpu", base_weights: str | Path | None = None) -> DeepfakeModel:
    """Raises UsageError when the file is not a model or its frozen base's weights cannot be found as trained.

    A model on a frozen base refers to the base's weights instead of storing them; `base_weights` says where
    that file is now when it has moved since training (its digest must match).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: model file not found")
    header = read_header(path)
    tensors = load_file(str(path))
    base = header["base"]
    common = dict(input_size=base["input_size"], normalization=base["normalization"])
    if header["includes_base"]:
        backbone = create_backbone(base["backbone"], weights="none", **common)
        backbone.module.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("base.")})
        backbone.weights, backbone.weights_digest = base["weights"], base["weights_digest"]
    else:
        source = str(base_weights or header.get("weights_path") or base["weights"])
        if source not in ("imagenet", "none") and not Path(source).is_file():
            raise UsageError(f"{path}: its {base['backbone']} base weights {source} are not there; pass "
                             f"--base-weights FILE (the file with sha256 {base['weights_digest'][:12]}...)")
        backbone = create_backbone(base["backbone"], weights=source, seed=int(header.get("seed", 0)), **common)
        if backbone.weights_digest != base["weights_digest"]:
            raise UsageError(f"{path}: trained on {base['backbone']} weights {base['weights_digest'][:12]}, "
                             f"but {source} has {backbone.weights_digest[:12]}")
    head = Head(HeadSpec(**header["head"]))
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    model = DeepfakeModel(backbone, head.eval(), header["pool"], float(header["threshold"]),
                          header.get("precision", "fp32"), header)
    return model.to(device)
