"""VGG16's convolutional base (Simonyan & Zisserman 2014) with torchvision's parameter names
(`features.0.weight`, ...), so the official torchvision ImageNet state dict loads as it is; the classifier
part of such a file is ignored.
"""

from __future__ import annotations

import torch
from torch import nn

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

