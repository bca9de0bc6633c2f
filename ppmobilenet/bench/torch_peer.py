"""The benchmark's PyTorch peer: ppmobilenet's MobileNetV1 / V2 / V3 (paddle lineage) layer for
layer in torch.nn (never downloaded; torch is the optional `bench` extra), and its eval and
training engines. Module names mirror ppmobilenet.models, so a Paddle state dict maps onto it by
name: both frameworks run the same network from the same numbers. Imports no Paddle (its process
holds PyTorch's memory only): the block tables of ppmobilenet.models come in the spec
(prepare.peer_blocks)."""
from collections import OrderedDict

import torch
from safetensors.numpy import load_file
from torch import nn

from .worker import Inference, Training


def conv_bn(cin, cout, k, stride, groups=1, act=nn.ReLU):
    # Paddle's BatchNorm momentum 0.9 (the weight of the old value) is torch's 0.1
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                     bn=nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1), act=act()))


def make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v1(class_dim, scale, head, blocks):  # blocks: mobilenet_v1.SEED_BLOCKS
    c = lambda n: int(n * scale)  # noqa: E731
    layers, cin = OrderedDict(conv1=conv_bn(3, c(32), 3, 2)), c(32)
    layers["blocks"] = nn.Sequential(*[nn.Sequential(OrderedDict(
        depthwise=conv_bn(cin if i == 0 else c(blocks[i - 1][1]), c(nf1), 3, stride, groups=c(groups)),
        pointwise=conv_bn(c(nf1), c(nf2), 1, 1))) for i, (nf1, nf2, groups, stride) in enumerate(blocks)])
    cin = c(blocks[-1][1])
    if head == "demo":
        layers["class_conv"], cin = nn.Conv2d(cin, class_dim, 1), class_dim
    layers.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(cin, class_dim))
    return nn.Sequential(layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):  # PaddleClas's hard-sigmoid: slope 0.2
        gate = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.clamp(0.2 * gate + 0.5, 0.0, 1.0)


class InvertedResidual(nn.Module):
    def __init__(self, cin, hidden, cout, stride, k=3, act=nn.ReLU6, se=False):
        super().__init__()
        self.expand = conv_bn(cin, hidden, 1, 1, act=act)
        self.dwise = conv_bn(hidden, hidden, k, stride, groups=hidden, act=act)
        self.se = SqueezeExcitation(hidden) if se else nn.Identity()
        self.linear = conv_bn(hidden, cout, 1, 1, act=nn.Identity)
        self.shortcut = stride == 1 and cin == cout

    def forward(self, x):
        y = self.linear(self.se(self.dwise(self.expand(x))))
        return x + y if self.shortcut else y


def mobilenet_v2(class_dim, scale, bottlenecks):  # mobilenet_v2.BOTTLENECKS
    cin, blocks = int(32 * scale), []
    layers = OrderedDict(conv1=conv_bn(3, cin, 3, 2, act=nn.ReLU6))
    for t, c, n, s in bottlenecks:
        for i in range(n):
            blocks.append(InvertedResidual(cin, int(round(cin * t)), int(c * scale), s if i == 0 else 1))
            cin = int(c * scale)
    last = int(1280 * scale) if scale > 1.0 else 1280
    layers.update(blocks=nn.Sequential(*blocks), conv9=conv_bn(cin, last, 1, 1, act=nn.ReLU6),
                  pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(last, class_dim))
    return nn.Sequential(layers)


class DownscaleInInfer(nn.Dropout):
    """Paddle's dropout mode "downscale_in_infer": no upscaling in training, times 1 - p in eval."""

    def forward(self, x):
        return super().forward(x) * (1 - self.p) if self.training else x * (1 - self.p)


def mobilenet_v3(class_dim, scale, table, last):  # mobilenet_v3.SIZES: blocks, last 1x1 conv width
    cin, blocks = make_divisible(16 * scale), []
    layers = OrderedDict(conv1=conv_bn(3, cin, 3, 2, act=nn.Hardswish))
    for k, e, c, se, act, s in table:
        blocks.append(InvertedResidual(cin, make_divisible(e * scale), make_divisible(c * scale), s, k,
                                       nn.Hardswish if act == "hardswish" else nn.ReLU, se))
        cin = make_divisible(c * scale)
    layers.update(blocks=nn.Sequential(*blocks), lastconv=conv_bn(cin, make_divisible(last * scale), 1, 1,
                                                                   act=nn.Hardswish),
                  pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                  pre_fc=nn.Linear(make_divisible(last * scale), 1280, bias=False), act=nn.Hardswish(),
                  dropout=DownscaleInInfer(0.2), fc=nn.Linear(1280, class_dim))
    return nn.Sequential(layers)


def build_torch_model(arch, blocks):
    """arch: the config's Arch section ({name, class_num, scale, head, variant}); blocks: its
    network's block table (prepare.peer_blocks)."""
    name, scale = arch["name"], arch.get("scale", 1.0)
    if arch.get("variant", "paddle") != "paddle":
        raise ValueError(f"no PyTorch peer for the {arch['variant']} variant")
    if name == "mobilenet_v1":
        return mobilenet_v1(arch["class_num"], scale, arch.get("head", "demo"), blocks)
    if name == "mobilenet_v2":
        return mobilenet_v2(arch["class_num"], scale, blocks)
    if name.startswith("mobilenet_v3_"):
        return mobilenet_v3(arch["class_num"], scale, *blocks)
    raise ValueError(f"no PyTorch peer for model {name!r}")


_RENAME = {"_mean": "running_mean", "_variance": "running_var"}


def load_paddle_state(model, state):
    """state: {paddle name: numpy array}. Every tensor must map (torch's strict load names the
    rest); Linear weights are transposed (Paddle stores [in, out]; the demo head's class_dim x
    class_dim fc is square, so shapes cannot tell)."""
    own, new = model.state_dict(), {}
    for name, value in state.items():
        prefix, _, last = name.rpartition(".")
        t = torch.from_numpy(value.copy())
        new[f"{prefix}.{_RENAME.get(last, last)}"] = t.t().contiguous() if t.ndim == 2 else t
    model.load_state_dict({**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **new})
    return model


def make(spec):
    """The "torch" (eval, softmax as the export) and "torch_train" engines, from the Paddle model's
    weights (the .safetensors the benchmark wrote), on the threads the spec gives."""
    torch.set_num_threads(int(spec["threads"]))
    model = load_paddle_state(build_torch_model(spec["arch"], spec["blocks"]), load_file(spec["path"]))
    if spec["kind"] == "torch":
        model.eval()

        def predict(x):
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()
        return Inference(predict, spec["inputs"], {"backend": "torch"})
    for m in model.modules():  # dropout off, as in the Paddle engines (bench/engines.py)
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    opt, loss_fn = torch.optim.SGD(model.train().parameters(), lr=0.01, momentum=0.9), nn.CrossEntropyLoss()

    def make_step(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.item()
        return step
    return Training(make_step, spec, {"backend": "torch"})
