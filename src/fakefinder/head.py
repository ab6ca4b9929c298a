"""The classifier head on top of a convolutional base: n x Dense(relu) [+ dropout], then one logit.

It takes the base's pooled (or flattened) features, so the same module trains on cached features and runs
behind a live base. Output is a logit; P(fake) = sigmoid(logit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    in_features: int
    n_layers: int = 1
    n_neurons: int = 256
    dropout: float = 0.0


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
