"""The classifier head on top of a convolutional base: pooling, n x Dense(relu) [+ dropout], then one logit.

It takes the base's feature map, pooled, so the same module trains on cached features and runs behind a live
base. Output is a logit; P(fake) = sigmoid(logit), before calibration.
"""

from __future__ import annotations

import torch
from torch import nn

from .modelcard import HeadSpec


def pooled(maps: torch.Tensor, pool: str) -> torch.Tensor:
    """Feature maps (N, C, H, W) -> vectors: flattened (as the reference) or globally averaged."""
    return torch.flatten(maps, 1) if pool == "flatten" else maps.mean(dim=(2, 3))


def in_features(channels: int, side: int, pool: str) -> int:
    return channels * side * side if pool == "flatten" else channels


class Head(nn.Module):
    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.in_features
        for _ in range(spec.n_layers):
            layers += [nn.Linear(width, spec.n_neurons), nn.ReLU()]
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = spec.n_neurons
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)
