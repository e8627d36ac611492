"""3DDFA-V2's MobileNet-V1 (models/mobilenet_v1.py of cleardusk/3DDFA_V2), re-typed without torchvision.

conv1 3x3 stride 2 -> 13 depth-wise separable blocks dw2_1 .. dw6 -> global average pool -> fc (62).
The official checkpoints store the 62-parameter head as ``fc_param`` (plus an unused 136-d
``fc_lm`` landmark head); 3DDFA-V2's own ``load_model`` copies ``fc_param.*`` into ``fc.*`` and
drops the rest, which ``export.checkpoint`` reproduces.
"""
from __future__ import annotations

import torch
from torch import nn

# (name, in multiple of 32, out multiple of 32, stride) in units of the base widths
_BLOCKS = [
    ("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2),
    ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2),
    ("dw5_1", 512, 512, 1), ("dw5_2", 512, 512, 1), ("dw5_3", 512, 512, 1),
    ("dw5_4", 512, 512, 1), ("dw5_5", 512, 512, 1), ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
]


class DepthWiseBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv_dw = nn.Conv2d(inplanes, inplanes, 3, stride=stride, padding=1, groups=inplanes, bias=False)
        self.bn_dw = nn.BatchNorm2d(inplanes)
        self.conv_sep = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """forward(x: (N,3,120,120) float, (img-127.5)/128, BGR) -> whitened params (N, num_classes)."""

    def __init__(self, widen_factor: float = 1.0, num_classes: int = 62):
        super().__init__()
        self.widen_factor = widen_factor
        w = lambda c: int(c * widen_factor)  # noqa: E731
        self.conv1 = nn.Conv2d(3, w(32), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w(32))
        self.relu = nn.ReLU(inplace=True)
        for name, cin, cout, stride in _BLOCKS:
            setattr(self, name, DepthWiseBlock(w(cin), w(cout), stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w(1024), num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


def widen_factor_from_state_dict(sd: dict) -> float:
    """Width multiplier read from conv1's output channels (16 -> 0.5, 32 -> 1.0, 8 -> 0.25 ...)."""
    w = sd.get("conv1.weight")
    if w is None:
        raise KeyError("conv1.weight")
    return w.shape[0] / 32.0
