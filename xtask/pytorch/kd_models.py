"""The project's own PyTorch definitions of its model zoo, mirroring the Rust networks of
`crates/kd-models`; used by the reference programs here (`throughput.py`) and by the fixture
generator of the checkpoint parity tests (`make_fixtures.py`).

Each class computes what the Rust network of the same name computes in eval mode (padding,
strides, pooling, ReLU placement, shortcuts, flatten order, classifier), and its `state_dict`
has the key names and shapes the Rust zoo loads (those of RepDistiller / mdistiller / TAKD), so
a checkpoint moves between the two either way. Initialisation follows the Rust code too (which
follows the originals), though nothing relies on it.

`build(spec, input_shape, classes)` takes the zoo's names, parsed as `zoo.rs` does
(case-insensitive, `_` counts as `-`): `mlp-W1-W2...`, `mlpbn-W1-W2...`, `planeN`, `resnetD`,
`resnetDx4`, `wrn-D-W`, `vggN`, `mobilenetv2`, `shufflenetv2`. `zoo_names()` lists the zoo.

Global average pooling is adaptive everywhere, as in Rust (the originals' fixed `AvgPool(8)`
only fits 32x32), so the CNNs take other input sizes too.
"""

import torch
from torch import nn
import torch.nn.functional as F


def _fan_out_init(module):
    """`N(0, sqrt(2 / (k*k*out)))` convolutions with zero bias, as the ResNet, WRN, VGG and
    MobileNetV2 sources (and `layers.rs`'s `ConvInit::FanOut`) do."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _small_linear(layer):
    """`N(0, 0.01)` weights, zero bias (`LinearInit::Small`: VGG, MobileNetV2)."""
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)
    return layer


def _global_pool(x):
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# --------------------------------------------------------------------------------------------
# MLP (mlp.rs)


class Mlp(nn.Module):
    """Flatten -> [Linear (-> BatchNorm1d) -> ReLU] per hidden width -> Linear.

    The Rust struct keeps the linear layers and the norms in two lists (`hidden.i`, `norms.i`),
    so the keys are those, not the indices of one interleaved Sequential.
    """

    def __init__(self, inputs, widths, classes, batch_norm):
        super().__init__()
        fan_ins = [inputs] + list(widths[:-1])
        self.hidden = nn.ModuleList(nn.Linear(i, w) for i, w in zip(fan_ins, widths))
        self.norms = nn.ModuleList(nn.BatchNorm1d(w) for w in widths) if batch_norm else nn.ModuleList()
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        x = torch.flatten(x, 1)
        for i, layer in enumerate(self.hidden):
            x = layer(x)
            if len(self.norms):
                x = self.norms[i](x)
            x = F.relu(x)
        return self.fc(x)


# --------------------------------------------------------------------------------------------
# TAKD plain CNNs (plane.rs)

# `plane_cifar100_book`: an int is Conv(3x3, bias)-BN-ReLU of that width, "M" a 2x2 max pooling;
# then the hidden FC widths (the classifier follows).
PLANE_BOOKS = {
    2: ([32, "M", 32, "M"], []),
    4: ([32, 32, "M", 64, 64, "M"], []),
    # No pooling after the last pair: a quirk of the original book, kept (plane.rs).
    6: ([32, 32, "M", 64, 64, "M", 128, 128], []),
    8: ([32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"], [64]),
    10: ([32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"], [512]),
}


class PlaneCnn(nn.Module):
    """TAKD's plain CNN: `conv_layers` and `fc_layers` Sequentials, parameter-free layers
    included so that the indices (with their gaps) are the original's."""

    def __init__(self, depth, input_shape, classes):
        super().__init__()
        if depth not in PLANE_BOOKS:
            raise ValueError(f"plane{depth}: TAKD defines plain CNNs of depth 2, 4, 6, 8 and 10 only")
        ops, hidden = PLANE_BOOKS[depth]
        c, h, w = input_shape
        layers = []
        for op in ops:
            if op == "M":
                if h < 2 or w < 2:
                    raise ValueError(f"plane{depth}: input {tuple(input_shape)} too small for its poolings")
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            else:
                layers += [nn.Conv2d(c, op, 3, 1, 1, bias=True), nn.BatchNorm2d(op), nn.ReLU()]
                c = op
        self.conv_layers = nn.Sequential(*layers)
        # The first FC layer's size comes from the input shape (TAKD hard-codes 32x32).
        fan_in = c * h * w
        fc = []
        for width in hidden:
            fc += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        fc.append(nn.Linear(fan_in, classes))
        self.fc_layers = nn.Sequential(*fc)

    def forward(self, x):
        return self.fc_layers(torch.flatten(self.conv_layers(x), 1))


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (resnet.rs)


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
        _fan_out_init(self)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(_global_pool(x))


# --------------------------------------------------------------------------------------------
# Wide ResNets (wrn.rs)


class WrnBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        # wrn.py's name, kept for the checkpoint keys.
        self.convShortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if cin != cout else None

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # The identity shortcut takes the raw input, the projection the activated one (wrn.py).
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class NetworkBlock(nn.Module):
    """A group of WRN blocks; wrn.py keeps them in a Sequential named `layer`."""

    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*(WrnBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)))

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """`wrn-D-W`: a 3x3 stem, three groups of (D - 4) / 6 blocks of widths 16W, 32W, 64W
    (strides 1, 2, 2), BN + ReLU, global average pooling, `fc`. Dropout (0 in KD) left out."""

    def __init__(self, depth, width, in_channels, classes):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or width < 1:
            raise ValueError(f"wrn-{depth}-{width}: depth must be 6n+4 and width positive")
        n = (depth - 4) // 6
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], classes)
        _fan_out_init(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(_global_pool(F.relu(self.bn1(x))))


# --------------------------------------------------------------------------------------------
# VGG with BatchNorm (vgg.rs)

VGG_CONFIGS = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class Vgg(nn.Module):
    """Five blocks of conv3x3 (bias) + BN + ReLU, 2x2 max pooling after blocks 0-2 (and after
    block 3 for inputs at least 64 high, as vgg.py), global average pooling, `classifier`."""

    def __init__(self, depth, in_channels, classes):
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"vgg{depth}: the zoo has vgg8, vgg11 and vgg13")
        cin = in_channels
        for i, widths in enumerate(VGG_CONFIGS[depth]):
            layers = []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=True), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            # vgg.py drops each block's last ReLU and applies it in forward.
            layers.pop()
            self.add_module(f"block{i}", nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = _small_linear(nn.Linear(cin, classes))
        _fan_out_init(self)

    def forward(self, x):
        pools = [True, True, True, x.shape[2] >= 64]
        blocks = [self.block0, self.block1, self.block2, self.block3, self.block4]
        for i, block in enumerate(blocks):
            x = F.relu(block(x))
            if i < 4 and pools[i]:
                x = self.pool(x)
        return self.classifier(_global_pool(x))


# --------------------------------------------------------------------------------------------
# MobileNetV2, mobile_half (mobilenetv2.rs)

# (expansion, channels, blocks, first stride) per group, before the width multiplier.
def _mobilenet_setting(t):
    return [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2), (t, 320, 1, 1)]


class InvertedResidual(nn.Module):
    """1x1 expansion, depthwise 3x3, linear 1x1 projection, in a Sequential `conv` whose
    indices 0-7 are mobilenetv2.py's; an identity shortcut when stride 1 keeps the width."""

    def __init__(self, inp, oup, stride, expansion):
        super().__init__()
        hidden = inp * expansion
        # Expansion 1 keeps its pointwise layer, as the original.
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )
        self.use_res_connect = stride == 1 and inp == oup

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for CIFAR: stride-2 3x3 stem, seven groups of inverted residual blocks,
    1x1 conv to 1280, global average pooling, `classifier.0`."""

    def __init__(self, in_channels, classes, expansion=6, width_mult=0.5, last_channels=1280):
        super().__init__()
        cin = int(32 * width_mult)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU())
        groups = []
        for e, c, n, s in _mobilenet_setting(expansion):
            cout = int(c * width_mult)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, e))
                cin = cout
            groups.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(groups)
        self.conv2 = nn.Sequential(nn.Conv2d(cin, last_channels, 1, 1, 0, bias=False), nn.BatchNorm2d(last_channels), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(last_channels, classes))
        _fan_out_init(self)
        _small_linear(self.classifier[0])

    def forward(self, x):
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.classifier(_global_pool(self.conv2(x)))


# --------------------------------------------------------------------------------------------
# ShuffleNetV2, net size 1 (shufflenetv2.rs)


def channel_shuffle(x, groups=2):
    """[N, C, H, W] -> [N, g, C/g, H, W] -> swap g and C/g -> [N, C, H, W]."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBlock(nn.Module):
    """The basic unit: the second half of the channels goes through 1x1, depthwise 3x3, 1x1;
    the halves are concatenated and shuffled."""

    def __init__(self, channels):
        super().__init__()
        c = channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        keep = x.shape[1] // 2
        x1, x2 = x[:, :keep], x[:, keep:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1))


class DownBlock(nn.Module):
    """The down-sampling unit: two stride-2 branches on the whole input, concatenated and
    shuffled. Left: depthwise 3x3, 1x1. Right: 1x1, depthwise 3x3, 1x1."""

    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (net size 1) for CIFAR: a 1x1 stem to 24 channels (no stride, no pooling),
    three stages of one DownBlock and 3, 7, 3 ShuffleBlocks (116, 232, 464 channels), a 1x1
    conv to 1024, global average pooling, `linear`."""

    OUT_CHANNELS = (116, 232, 464, 1024)
    NUM_BLOCKS = (3, 7, 3)
    STEM = 24

    def __init__(self, in_channels, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, self.STEM, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.STEM)
        cin = self.STEM
        stages = []
        for cout, n in zip(self.OUT_CHANNELS, self.NUM_BLOCKS):
            stages.append(nn.Sequential(DownBlock(cin, cout), *(ShuffleBlock(cout) for _ in range(n))))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(cin, self.OUT_CHANNELS[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(self.OUT_CHANNELS[3])
        self.linear = nn.Linear(self.OUT_CHANNELS[3], classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(_global_pool(x))


# --------------------------------------------------------------------------------------------
# Names (zoo.rs)


def zoo_names():
    """The zoo's networks in `ModelSpec::zoo()`'s order (the MLPs excluded)."""
    return (
        [f"plane{d}" for d in (2, 4, 6, 8, 10)]
        + [f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)]
        + ["resnet8x4", "resnet32x4"]
        + ["wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2"]
        + ["vgg8", "vgg11", "vgg13"]
        + ["mobilenetv2", "shufflenetv2"]
    )


def _number(text, spec):
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"unknown model `{spec}`")
    return int(text)


def parse(spec):
    """`(family, arguments)` of a model name, read as `ModelSpec::parse` reads it."""
    name = spec.strip().lower().replace("_", "-")
    for family in ("mlpbn", "mlp"):
        if name.startswith(family):
            rest = name[len(family):]
            if family == "mlp" and not rest:
                return "mlp", [256]
            return family, [_number(w, spec) for w in rest.lstrip("-").split("-")]
    if name.startswith("plane"):
        return "plane", _number(name[len("plane"):], spec)
    if name.startswith("resnet"):
        rest = name[len("resnet"):]
        x4 = rest.endswith("x4")
        return "resnet", (_number(rest[:-2] if x4 else rest, spec), x4)
    if name.startswith("wrn-"):
        depth, _, width = name[len("wrn-"):].partition("-")
        return "wrn", (_number(depth, spec), _number(width, spec))
    if name.startswith("vgg"):
        rest = name[len("vgg"):]
        return "vgg", _number(rest[:-3] if rest.endswith("-bn") else rest, spec)
    if name in ("mobilenetv2", "mobile-half", "mobilenetv2-half"):
        return "mobilenetv2", None
    if name in ("shufflenetv2", "shufflev2"):
        return "shufflenetv2", None
    raise ValueError(f"unknown model `{spec}`")


def canonical_name(spec):
    """The zoo's canonical spelling of a model name (`ModelSpec::name`)."""
    family, args = parse(spec)
    if family in ("mlp", "mlpbn"):
        return family + "-" + "-".join(str(w) for w in args)
    if family == "resnet":
        return f"resnet{args[0]}" + ("x4" if args[1] else "")
    if family == "wrn":
        return f"wrn-{args[0]}-{args[1]}"
    if family in ("plane", "vgg"):
        return f"{family}{args}"
    return family


def build(spec, input_shape, classes):
    """The network named `spec` for inputs `(C, H, W)` and `classes` outputs."""
    c, h, w = input_shape
    family, args = parse(spec)
    if family in ("mlp", "mlpbn"):
        return Mlp(c * h * w, args, classes, family == "mlpbn")
    if family == "plane":
        return PlaneCnn(args, input_shape, classes)
    if family == "resnet":
        depth, x4 = args
        filters = (32, 64, 128, 256) if x4 else (16, 16, 32, 64)
        return ResNet(depth, filters, c, classes)
    if family == "wrn":
        return WideResNet(args[0], args[1], c, classes)
    if family == "vgg":
        return Vgg(args, c, classes)
    if family == "mobilenetv2":
        return MobileNetV2(c, classes)
    return ShuffleNetV2(c, classes)
