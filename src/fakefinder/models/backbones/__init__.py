"""ImageNet convolutional bases behind one registry, as timm's: `create_backbone(name, weights=...)`.

Each family registers its members in its own module of this package with a `BackboneSpec` (`_spec`): how to build
it, its input size, normalisation and feature channels, and where its ImageNet weights come from. That spec is the
only source of the preprocessing settings, and with the weights' digest it keys the feature cache, so adding a
backbone means adding (or editing) one family file, and its name to `registries.BACKBONES`, the names the settings
validate against (the families must register exactly those). Families are imported on first use: listing the
options of `fakefinder` never loads PyTorch.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np

from ... import options, registries
from ...config import TrainSettings
from ...errors import OptionError, UsageError
from ._spec import _REGISTRY, BackboneSpec, WeightSource, register
from ._weights import file_digest, read_checkpoint

__all__ = ["BackboneSpec", "WeightSource", "Backbone", "Recipe", "NORMALIZATIONS", "register", "backbone_names",
           "get_spec", "create_backbone", "read_checkpoint", "file_digest"]

# Per-channel mean and std in 0-255 RGB units, applied after resizing.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # torchvision's and timm's weights
    "inception": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),  # -1..1: Xception, FaceForensics++
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),  # EfficientNet-Lite's TensorFlow training
    "rescale": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),  # the reference: plain 0-1 pixels
}
registries.implements("normalization", registries.NORMALIZATIONS, NORMALIZATIONS)
_loaded = False


def _load_families() -> None:
    """Import every family module of this package (each registers its members): together they register exactly
    the backbones that the settings declare (`registries.BACKBONES`)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                import_module(f"{__name__}.{info.name}")
        registries.implements("backbone", registries.BACKBONES, _REGISTRY)


def backbone_names() -> list[str]:
    _load_families()
    return list(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown backbone {name!r} (choose from {', '.join(_REGISTRY)})") from None


@dataclass(frozen=True)
class Preprocess:
    """BGR uint8 crop of any size -> normalised CHW float32 at the input size. Small and picklable: input
    pipeline workers get this, not the base."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cv2

        size = self.input_size
        interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
        rgb = cv2.resize(image, (size, size), interpolation=interp)[:, :, ::-1].astype(np.float32)
        return ((rgb - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).transpose(2, 0, 1)

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Crops -> NCHW float32 (contiguous): what either runtime's base takes."""
        size = self.input_size
        return np.stack([self(im) for im in images]) if images else np.zeros((0, 3, size, size), np.float32)


@dataclass(frozen=True)
class Recipe:
    """What `create_backbone` takes: picklable and without tensors, so that another process or machine builds the
    same base. The seed only matters for random weights ("none"); elsewhere it is 0, so that equal recipes mean
    equal features."""

    backbone: str
    weights: str = "imagenet"  # imagenet, none, or the path of a weights file
    input_size: int | None = None  # None: the spec's
    normalization: str | None = None  # None: the spec's
    seed: int = 0

    @classmethod
    def of(cls, settings) -> Recipe:
        """The base that training settings (a TrainSettings) name."""
        return cls(settings.backbone, str(settings.weights), settings.input_size, settings.normalization,
                   settings.seed if settings.weights == "none" else 0)

    def build(self) -> Backbone:
        return create_backbone(self.backbone, weights=self.weights, input_size=self.input_size,
                               normalization=self.normalization, seed=self.seed)


class Backbone:
    """A frozen-or-trainable base with its preprocessing; counts the images it has seen. `recipe` rebuilds it;
    `weights` names its weights for people (a file's name, not its path)."""

    def __init__(self, spec: BackboneSpec, module, *, weights: str, weights_digest: str,
                 input_size: int | None = None, normalization: str | None = None, recipe: Recipe | None = None
                 ) -> None:
        self.spec, self.module, self.recipe = spec, module, recipe
        self.weights, self.weights_digest = weights, weights_digest
        self.input_size = input_size or spec.input_size
        self.normalization = normalization or spec.normalization
        declared = options.declared(TrainSettings)  # a larger input is a mistake (or a hostile model file)
        for name in ("normalization", "input_size"):
            problem = declared[name].problem(getattr(self, name))
            if problem:
                raise OptionError(name, problem)
        mean, std = NORMALIZATIONS[self.normalization]
        self.preprocess_one = Preprocess(self.input_size, tuple(mean), tuple(std))
        self.images_seen = 0

    @property
    def key(self) -> dict:
        """Everything that determines the features of a crop, for the cache key and the model card."""
        p = self.preprocess_one
        return {"backbone": self.spec.name, "weights": self.weights, "weights_digest": self.weights_digest,
                "input_size": self.input_size, "normalization": self.normalization,
                "mean": list(p.mean), "std": list(p.std)}

    def feature_shape(self) -> tuple[int, int, int]:
        side = self.spec.feature_side(self.input_size)
        return self.spec.channels, side, side

    def preprocess(self, images: list[np.ndarray]):
        """BGR uint8 crops of any size -> normalised NCHW float tensor (channels-last memory)."""
        import torch

        return torch.from_numpy(self.preprocess_one.batch(images)).contiguous(memory_format=torch.channels_last)

    def features(self, x, *, precision: str = "fp32"):
        """The base's output map for a preprocessed batch, in float32 whatever `precision` computed it in
        (gradients flow only if the caller enables them)."""
        from ...hardware import autocast

        self.images_seen += int(x.shape[0])
        with autocast(x.device.type, precision):
            return self.module.forward_features(x).float()

    def blocks(self) -> list:
        return self.module.feature_blocks()


def create_backbone(name: str, *, weights: str | Path = "imagenet", input_size: int | None = None,
                    normalization: str | None = None, seed: int = 0) -> Backbone:
    """A base by name with `weights` = "imagenet", "none" (random, seeded) or a file (a state dict, Keras' VGG16
    .h5, or a published detector checkpoint whose base is this one).

    Raises UsageError for an unknown name, unreadable or mismatched weights, or ImageNet weights that cannot be
    had (with the one line that says how to get them).
    """
    import torch

    spec = get_spec(name)
    weights = str(weights)
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's RNG alone
        torch.manual_seed(seed)
        module = spec.build()
    if weights == "none":
        digest = f"random-seed-{seed}"
    else:
        if weights == "imagenet":
            if spec.imagenet is None:
                raise OptionError("weights", f"cannot be imagenet: {name} has no ImageNet weights (give a file, or "
                                             "none)")
            path = spec.imagenet.fetch(name)
        else:
            path = Path(weights)
        _load_into(module, read_checkpoint(path).base_state(backbone=name), path, name)
        digest = file_digest(path)
    module.eval().to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    label = weights if weights in ("imagenet", "none") else Path(weights).name
    recipe = Recipe(name, weights, input_size, normalization, seed if weights == "none" else 0)
    return Backbone(spec, module, weights=label, weights_digest=digest, input_size=input_size,
                    normalization=normalization, recipe=recipe)


def _load_into(module, state: dict, path: Path, name: str) -> None:
    """Load the base's parameters from `state`, ignoring a classifier; every other mismatch is an error."""
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in usable and not k.startswith(("_fc.", "fc.", "last_linear."))]
    if missing:
        raise UsageError(f"{path}: not {name} weights ({len(missing)} parameters missing, e.g. {missing[0]})")
    bad = [k for k, v in usable.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise UsageError(f"{path}: parameter {bad[0]} has shape {tuple(usable[bad[0]].shape)}, expected "
                         f"{tuple(own[bad[0]].shape)}")
    module.load_state_dict(usable, strict=False)

