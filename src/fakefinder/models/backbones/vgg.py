"""VGG16's convolutional base (Simonyan & Zisserman 2014) with torchvision's parameter names
(`features.0.weight`, ...), so the official torchvision ImageNet state dict loads as it is; the classifier
part of such a file is ignored. Keras' `.h5` weights (what the reference study used) are converted on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import UsageError
from ._spec import BackboneSpec, WeightSource, register

CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """`forward_features` gives the 512-channel map after the fifth pooling (4x4 at 150 px, as in Keras)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    forward = forward_features

    def feature_blocks(self) -> list[nn.Module]:
        """The five conv blocks, each ending at a max-pool: what `--trainable-blocks K` unfreezes from the end."""
        blocks, current = [], []
        for layer in self.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(nn.Sequential(*current))
                current = []
        return blocks

    @staticmethod
    def feature_side(input_size: int) -> int:
        return input_size // 32  # five 2x2 max-pools, each flooring


# torchvision's ImageNet weights; the file name carries the leading digits of its sha256, as torch.hub checks.
register(BackboneSpec("vgg16", "vgg", VGG16, 224, "imagenet", 512, VGG16.feature_side,
                      WeightSource(url="https://download.pytorch.org/models/vgg16-397923af.pth", sha256="397923af")))


def conv_indices() -> list[int]:
    """Positions of the 13 convolutions in `features` (each conv is followed by a ReLU, each pool stands alone)."""
    out, i = [], 0
    for v in CONFIG:
        if v != "M":
            out.append(i)
        i += 1 if v == "M" else 2
    return out


def _names(group, attr: str) -> list[str]:
    """A Keras name-list attribute, which Keras splits into `attr0`, `attr1`, ... when it is large."""
    if attr in group.attrs:
        chunks = [group.attrs[attr]]
    else:
        chunks = []
        while f"{attr}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{attr}{len(chunks)}"])
    return [n.decode() if isinstance(n, bytes) else str(n) for chunk in chunks for n in chunk]


def keras_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Keras' VGG16 weights (`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`, 58 MB, or a full-model file)
    under torchvision's names, so `--preset reference` can run on the very weights the study used.

    Layers are matched by order, as Keras' own loader does, so Keras 1 names (`block1_conv1_W_1:0`) and
    Keras 2 names (`block1_conv1/kernel:0`) both work; dense layers of a file with the top are ignored.
    Kernels are (h, w, in, out) cross-correlations in Keras and (out, in, h, w) in PyTorch. The values are
    kept as they are: Keras' weights came from Caffe and expect BGR input, which the study never gave them.
    """
    try:
        import h5py
    except ImportError:
        raise UsageError(f"{path}: reading Keras .h5 weights needs h5py (pip install h5py)") from None
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        convs = []
        for layer in _names(group, "layer_names"):
            weights = [np.asarray(group[layer][n]) for n in _names(group[layer], "weight_names")]
            if len(weights) == 2 and weights[0].ndim == 4:
                convs.append(weights)
    if len(convs) != 13:
        raise UsageError(f"{path}: not Keras VGG16 weights ({len(convs)} convolution layers, expected 13)")
    state = {}
    for index, (kernel, bias) in zip(conv_indices(), convs):
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1),
                                                                                  dtype=np.float32))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32))
    return state
