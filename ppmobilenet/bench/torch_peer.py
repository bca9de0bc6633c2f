"""The PyTorch peer of the benchmark: ppmobilenet's MobileNetV1 / V2, layer for layer, in torch.nn.

Defined here, never downloaded; torch comes from the optional extra (pip install
'ppmobilenet[bench]'). Module names and creation order mirror ppmobilenet.models, so a Paddle
state dict maps onto it by name (load_paddle_state), which the benchmark uses to prove that both
frameworks run the same network (same outputs on the same weights).
Imported by worker.py as a sibling script module: standard library and torch only.
"""
import torch
from torch import nn

# (num_filters1, num_filters2, num_groups, stride) as ppmobilenet.models.mobilenet_v1.SEED_BLOCKS
V1_BLOCKS = [(32, 64, 32, 1), (64, 128, 64, 2), (128, 128, 128, 1), (128, 256, 128, 2),
             (256, 256, 256, 1), (256, 512, 256, 2)] + [(512, 512, 512, 1)] * 5 + \
            [(512, 1024, 512, 2), (1024, 1024, 1024, 1)]
# (t, c, n, s) as ppmobilenet.models.mobilenet_v2.BOTTLENECKS
V2_BOTTLENECKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, padding, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)
        # Paddle momentum 0.9 (weight of the old value) is torch momentum 0.1
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.act = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), None: nn.Identity()}[act]

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin, nf1, nf2, groups, stride, scale):
        super().__init__()
        self.depthwise = ConvBN(cin, int(nf1 * scale), 3, stride, 1, groups=int(groups * scale))
        self.pointwise = ConvBN(int(nf1 * scale), int(nf2 * scale), 1, 1, 0)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    def __init__(self, class_dim=1000, scale=1.0, head="classic"):
        super().__init__()
        self.head = head
        self.conv1 = ConvBN(3, int(32 * scale), 3, 2, 1)
        blocks, cin = [], int(32 * scale)
        for nf1, nf2, groups, stride in V1_BLOCKS:
            blocks.append(DepthwiseSeparable(cin, nf1, nf2, groups, stride, scale))
            cin = int(nf2 * scale)
        self.blocks = nn.Sequential(*blocks)
        if head == "demo":
            self.class_conv = nn.Conv2d(cin, class_dim, 1)
            cin = class_dim
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, class_dim)

    def forward(self, x):
        x = self.blocks(self.conv1(x))
        if self.head == "demo":
            x = self.class_conv(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t, shortcut):
        super().__init__()
        hidden = int(round(cin * t))
        self.expand = ConvBN(cin, hidden, 1, 1, 0, act="relu6")
        self.dwise = ConvBN(hidden, hidden, 3, stride, 1, groups=hidden, act="relu6")
        self.linear = ConvBN(hidden, cout, 1, 1, 0, act=None)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.linear(self.dwise(self.expand(x)))
        return x + y if self.shortcut else y


class MobileNetV2(nn.Module):
    def __init__(self, class_dim=1000, scale=1.0):
        super().__init__()
        cin = int(32 * scale)
        self.conv1 = ConvBN(3, cin, 3, 2, 1, act="relu6")
        blocks = []
        for t, c, n, s in V2_BOTTLENECKS:
            cout = int(c * scale)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, i > 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        last = int(1280 * scale) if scale > 1.0 else 1280
        self.conv9 = ConvBN(cin, last, 1, 1, 0, act="relu6")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, class_dim)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.conv9(self.blocks(self.conv1(x)))), 1))


def build_torch_model(arch):
    """arch: the config's Arch section ({name, class_num, scale, head})."""
    name = arch["name"].lower()
    if name == "mobilenet_v1":
        return MobileNetV1(arch["class_num"], arch.get("scale", 1.0), arch.get("head", "demo"))
    if name == "mobilenet_v2":
        return MobileNetV2(arch["class_num"], arch.get("scale", 1.0))
    raise ValueError(f"no PyTorch peer for model {arch['name']!r}")


_RENAME = {"_mean": "running_mean", "_variance": "running_var"}


def load_paddle_state(model, state):
    """state: {paddle name: numpy array}. Every tensor must map; Linear weights are transposed
    (Paddle stores [in, out]); the demo head's class_dim x class_dim fc is square, so shapes
    cannot tell."""
    own = model.state_dict()
    wanted = {k for k in own if not k.endswith("num_batches_tracked")}
    new = {}
    for name, value in state.items():
        prefix, _, last = name.rpartition(".")
        key = f"{prefix}.{_RENAME.get(last, last)}"
        if key not in own:
            raise KeyError(f"Paddle tensor {name} has no PyTorch counterpart ({key})")
        t = torch.from_numpy(value.copy())
        if t.ndim == 2:  # a Linear weight: Paddle [in, out], PyTorch [out, in] (even when square)
            t = t.t().contiguous()
        if tuple(t.shape) != tuple(own[key].shape):
            raise ValueError(f"{name}: shape {list(t.shape)} vs PyTorch {list(own[key].shape)}")
        new[key] = t
    missing = sorted(wanted - set(new))
    if missing:
        raise KeyError(f"PyTorch tensors without a Paddle value: {missing[:5]}")
    model.load_state_dict(new, strict=False)
    return model
