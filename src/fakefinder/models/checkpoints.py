"""Published deepfake detectors that users can download today, read as they were saved and renamed onto our
backbones, so that `--weights FILE` can start training from them and `evaluate`/`predict` can run them as they
are: does the winners' model work on my data?

- The DFDC winner (Selim Seferbekov, MIT licence): `DeepFakeClassifier` = timm's `tf_efficientnet_b7_ns` as
  `encoder`, average pooling, `fc` = Linear(2560, 1) giving a logit of P(fake); saved as `{"state_dict": ...}`
  under DistributedDataParallel's `module.` prefix. Run on 380 px faces with ImageNet normalisation, every face
  of 32 frames, the confident video rule.
- The FaceForensics++ Xception baseline (Rössler et al.): `TransferModel` whose `model` is Cadene's Xception
  with `last_linear` = (Dropout, Linear(2048, 2)), index 1 = fake, pickled whole; 299 px in [-1, 1], faces
  enlarged 1.3 times.

A file is read and recognised once, by `backbones.read_checkpoint`, into a `Checkpoint`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

# timm's EfficientNet names -> lukemelas' (our) names, per block kind.
_TIMM_DS = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce",
            "se.conv_expand": "_se_expand", "conv_pw": "_project_conv", "bn2": "_bn2"}
_TIMM_IR = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
            "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv",
            "bn3": "_bn2"}
_TIMM_TOP = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
# (head channels, blocks) -> our EfficientNet-B name
_B_BY_SHAPE = {(1280, 16): "efficientnet_b0", (1280, 23): "efficientnet_b1", (1408, 23): "efficientnet_b2",
               (1536, 26): "efficientnet_b3", (1792, 32): "efficientnet_b4", (2048, 39): "efficientnet_b5",
               (2304, 45): "efficientnet_b6", (2560, 55): "efficientnet_b7"}


@dataclass(frozen=True)
class CheckpointLayout:
    """How one published checkpoint is laid out, and how its authors ran it."""

    name: str
    matches: Callable[[dict], bool]
    backbone: Callable[[dict], str]
    base_state: Callable[[dict], dict]  # under our backbone's names
    head: Callable[[dict], tuple]  # (weight (1, C), bias (1,)) of one logit of P(fake)
    input_size: int
    normalization: str
    prepare: dict = field(default_factory=dict)  # PrepareSettings that approximate the authors' face crops
    video_rule: str = "mean"


def _dfdc_blocks(state: dict) -> list[tuple[int, int]]:
    found = {tuple(map(int, m.groups())) for k in state
             if (m := re.match(r"encoder\.blocks\.(\d+)\.(\d+)\.", k))}
    return sorted(found)


def _dfdc_backbone(state: dict) -> str:
    key = (int(state["encoder.conv_head.weight"].shape[0]), len(_dfdc_blocks(state)))
    if key not in _B_BY_SHAPE:
        raise ValueError(f"an EfficientNet with {key[1]} blocks and {key[0]} channels is not one of B0-B7")
    return _B_BY_SHAPE[key]


def _dfdc_base(state: dict) -> dict:
    flat = {block: i for i, block in enumerate(_dfdc_blocks(state))}
    out = {}
    for key, value in state.items():
        if not key.startswith("encoder.") or key.startswith("encoder.classifier."):
            continue
        name = key[len("encoder."):]
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", name)
        if m:
            stage, index, part, kind = int(m[1]), int(m[2]), m[3], m[4]
            renamed = (_TIMM_DS if stage == 0 else _TIMM_IR)[part]
            out[f"_blocks.{flat[(stage, index)]}.{renamed}.{kind}"] = value
        else:
            module, _, kind = name.rpartition(".")
            out[f"{_TIMM_TOP[module]}.{kind}"] = value
    return out


def _ffpp_base(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("model.") and not key.startswith("model.last_linear"):
            if key.endswith("pointwise.weight") and value.dim() == 2:  # Cadene's first file kept them 2-D
                value = value[:, :, None, None]
            out[key[len("model."):]] = value
    return out


def _ffpp_head(state: dict) -> tuple:
    weight = state.get("model.last_linear.1.weight", state.get("model.last_linear.weight"))
    bias = state.get("model.last_linear.1.bias", state.get("model.last_linear.bias"))
    # softmax over (real, fake) = sigmoid of the difference of their logits
    return (weight[1] - weight[0])[None, :], (bias[1] - bias[0])[None]


LAYOUTS = (
    CheckpointLayout("DFDC winner", lambda s: "encoder.conv_stem.weight" in s and "fc.weight" in s
                     and tuple(s["fc.weight"].shape)[0] == 1,
                     _dfdc_backbone, _dfdc_base, lambda s: (s["fc.weight"], s["fc.bias"]), 380, "imagenet",
                     dict(fps=None, frames=32, faces="all", margin=1 / 3, detector="blazeface"), "confident"),
    CheckpointLayout("FaceForensics++ Xception", lambda s: "model.block1.rep.0.conv1.weight" in s
                     and any(k.startswith("model.last_linear") for k in s),
                     lambda s: "xception", _ffpp_base, _ffpp_head, 299, "inception",
                     dict(margin=0.15, faces="largest")),
)


def identify(state: dict) -> CheckpointLayout | None:
    """The published layout these tensors follow, or None for a plain state dict of a base."""
    return next((layout for layout in LAYOUTS if layout.matches(state)), None)


@dataclass(frozen=True)
class Checkpoint:
    """A weights file's tensors as read (`backbones.read_checkpoint`), and the published layout they follow."""

    path: Path
    tensors: dict
    layout: CheckpointLayout | None  # None: a plain state dict of a base

    def backbone(self) -> str:
        """The name of our backbone that a published checkpoint's base is."""
        assert self.layout is not None, "a plain state dict does not say its backbone"
        return self.layout.backbone(self.tensors)

    def base_state(self, *, backbone: str | None = None) -> dict:
        """The base's parameters under our names: a plain state dict as it is, a published checkpoint's base part
        renamed. Raises UsageError for a published checkpoint of another backbone than `backbone`."""
        if self.layout is None:
            return self.tensors
        if backbone is not None and self.backbone() != backbone:
            raise UsageError(f"{self.path}: a {self.layout.name} checkpoint of {self.backbone()}, not {backbone}")
        return self.layout.base_state(self.tensors)

    def head(self) -> tuple:
        """A published checkpoint's classifier: (weight (1, C), bias (1,)) of one logit of P(fake)."""
        assert self.layout is not None, "a plain state dict has no classifier"
        return self.layout.head(self.tensors)
