"""PyTorch definitions of this project's model zoo, written for the reference programs here.

Each class mirrors the Rust network of the same name in `crates/kd-models` (layer order,
padding, bias, BatchNorm defaults), so that a reference program does the same work as the
Rust code. `build(spec, input_shape, classes)` takes the zoo's model names: `mlp-W1-W2...`,
`mlpbn-W1-W2...`, `resnetD` and `resnetDx4` (CIFAR ResNets, depth 6n+2).
"""

import torch
from torch import nn
import torch.nn.functional as F


class Mlp(nn.Module):
    """Flatten -> [Linear (-> BatchNorm1d) -> ReLU] per hidden width -> Linear."""

    def __init__(self, inputs, widths, classes, batch_norm):
        super().__init__()
        layers = []
        fan_in = inputs
        for w in widths:
            layers.append(nn.Linear(fan_in, w))
            if batch_norm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(nn.ReLU())
            fan_in = w
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(fan_in, classes)

    def forward(self, x):
        return self.fc(self.hidden(torch.flatten(x, 1)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; a 1x1 projection when the shape changes."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + residual)


class ResNet(nn.Module):
    """The CIFAR ResNet of the KD literature: a 3x3 stem, three stages of (depth - 2) / 6
    basic blocks (strides 1, 2, 2), global average pooling, a linear classifier."""

    def __init__(self, depth, filters, in_channels, classes):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet{depth}: depth must be 6n+2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, filters[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        inplanes = filters[0]
        stages = []
        for planes, stride in zip(filters[1:], (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(inplanes, planes, stride if i == 0 else 1))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(filters[3], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def build(spec, input_shape, classes):
    """The network named `spec` for inputs `(C, H, W)` and `classes` outputs."""
    c, h, w = input_shape
    for prefix, batch_norm in (("mlpbn-", True), ("mlp-", False)):
        if spec.startswith(prefix):
            widths = [int(x) for x in spec[len(prefix):].split("-")]
            return Mlp(c * h * w, widths, classes, batch_norm)
    if spec.startswith("resnet"):
        body = spec[len("resnet"):]
        x4 = body.endswith("x4")
        depth = int(body[:-2] if x4 else body)
        filters = (32, 64, 128, 256) if x4 else (16, 16, 32, 64)
        return ResNet(depth, filters, c, classes)
    raise ValueError(f"no PyTorch definition for model `{spec}`")
