"""Xception (Chollet 2017), the FaceForensics++ baseline, with Cadene's `pretrainedmodels` parameter names
(`block1.rep.0.conv1.weight`, ...) so that its ImageNet weights, and the FaceForensics++ detectors built on
them, load as they are. Inputs in [-1, 1] at 299 px, as both were trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._spec import BackboneSpec, WeightSource, register


class SeparableConv2d(nn.Module):
    """A depthwise 3x3 (`conv1`) then a pointwise 1x1 (`pointwise`), both without bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """`reps` x (ReLU, separable conv, BN), growing to `cout` first or last, a max-pool when strided, and a
    residual (a strided 1x1 conv + BN when the shape changes). `rep`'s indices count the ReLUs and the pool, as
    Cadene's do, so the parameter names match."""

    def __init__(self, cin: int, cout: int, reps: int, stride: int, start_with_relu: bool, grow_first: bool):
        super().__init__()
        if cout != cin or stride != 1:
            self.skip = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(cout)
        else:
            self.skip = None
        widths = ([(cin, cout)] + [(cout, cout)] * (reps - 1) if grow_first
                  else [(cin, cin)] * (reps - 1) + [(cin, cout)])
        layers: list[nn.Module] = []
        for a, b in widths:
            layers += [nn.ReLU(), SeparableConv2d(a, b), nn.BatchNorm2d(b)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skipbn(self.skip(x)) if self.skip is not None else x
        return self.rep(x) + skip


# (in, out, reps, stride, start_with_relu, grow_first) of block1..block12
BLOCKS = ((64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True),
          *[(728, 728, 3, 1, True, True)] * 8, (728, 1024, 2, 2, True, False))


class Xception(nn.Module):
    """`forward_features` gives the 2048-channel map after the last ReLU (10x10 at 299 px); `fc` is ImageNet's."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        for i, args in enumerate(BLOCKS, 1):
            self.add_module(f"block{i}", Block(*args))
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        self.fc = nn.Linear(2048, num_classes)

    def _stages(self) -> list[nn.Module]:
        return [getattr(self, f"block{i}") for i in range(1, len(BLOCKS) + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self._stages():
            x = block(x)
        x = F.relu(self.bn3(self.conv3(x)))
        return F.relu(self.bn4(self.conv4(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.forward_features(x), 1), 1))

    def feature_blocks(self) -> list[nn.Module]:
        """Units that `--trainable-blocks K` unfreezes from the end: the entry convs, each block, the exit convs."""
        return [nn.ModuleList([self.conv1, self.bn1, self.conv2, self.bn2]), *self._stages(),
                nn.ModuleList([self.conv3, self.bn3, self.conv4, self.bn4])]

    @staticmethod
    def feature_side(input_size: int) -> int:
        side = (input_size - 3) // 2 + 1 - 2  # conv1 (stride 2) and conv2, both unpadded
        for _ in range(4):  # the strided blocks' max-pools (3, 2, padding 1) round up
            side = (side - 1) // 2 + 1
        return side


register(BackboneSpec("xception", "xception", Xception, 299, "inception", 2048, Xception.feature_side,
                      WeightSource(url="http://data.lip6.fr/cadene/pretrainedmodels/xception-43020ad28.pth",
                                   sha256="43020ad28")))
