"""MobileNetV3 small and large ("Searching for MobileNetV3"), in its two lineages.

Both lineages share the block tables below; they differ in the details that decide the outputs:

| | variant="paddle" (PaddleClas) | variant="torchvision" (torchvision, paddle.vision) |
|---|---|---|
| BatchNorm | momentum 0.9, eps 1e-5, no L2 on scale/offset | momentum 0.99 (torch 0.01), eps 1e-3 |
| expansion conv | in every block, even when it keeps the width | only where it widens |
| SE squeeze / gate | c // 4; hard-sigmoid slope 0.2 | make_divisible(c // 4); slope 1/6 |
| last 1x1 conv | make_divisible(960 or 576 x scale) | 6 x the last block's width |
| head | 1280 wide at every scale, no bias | make_divisible(1280 or 1024 x scale), bias |
| dropout 0.2 | "downscale_in_infer": inference scales by 0.8 | inverted: inference passes through |
"""
from dataclasses import dataclass

import paddle
import paddle.nn.functional as F
from paddle import nn

from .blocks import (FLUID_BN, TORCH_V3_BN, ConvBNLayer, InvertedResidual, SqueezeExcitation,
                     make_divisible, torch_conv_init, torch_linear_attr)

# (kernel, expanded width, output width, squeeze-excitation, activation, stride)
LARGE = [
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
]
SMALL = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
]
# size -> (blocks, last 1x1 conv width, head width) at scale 1.0
SIZES = {"large": (LARGE, 960, 1280), "small": (SMALL, 576, 1024)}
VARIANTS = ("paddle", "torchvision")
STEM = 16


@dataclass(frozen=True)
class Lineage:
    """How one source builds MobileNetV3 (see the module docstring)."""
    bn: tuple
    bn_decay: bool
    weight_init: object
    expand_always: bool
    se_squeeze: object     # fn(expanded width) -> squeezed width
    se_slope: float
    paddle_tail: bool      # last conv from the table's width, 1280-wide bias-free head
    dropout_mode: str


LINEAGES = {
    "paddle": Lineage(FLUID_BN, False, None, True, lambda c: c // 4, 0.2, True, "downscale_in_infer"),
    "torchvision": Lineage(TORCH_V3_BN, True, torch_conv_init, False,
                           lambda c: make_divisible(c // 4), 1.0 / 6.0, False, "upscale_in_train"),
}


class MobileNetV3(nn.Layer):
    """MobileNetV3 returning logits. size: "large" | "small"; variant: "paddle" | "torchvision"."""

    def __init__(self, class_dim=1000, scale=1.0, size="large", variant="paddle", dropout=0.2):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"MobileNetV3 size must be one of {tuple(SIZES)}, got {size!r}")
        if variant not in VARIANTS:
            raise ValueError(f"MobileNetV3 variant must be one of {VARIANTS}, got {variant!r}")
        if not scale > 0:
            raise ValueError(f"MobileNetV3 scale must be > 0, got {scale!r}")
        self.class_dim, self.scale, self.size, self.variant = class_dim, scale, size, variant
        self.dropout_p = dropout
        table, last_width, head_width = SIZES[size]
        lin = LINEAGES[variant]
        conv = {"weight_init": lin.weight_init, "bn": lin.bn, "bn_decay": lin.bn_decay}
        in_c = make_divisible(STEM * scale)
        self.conv1 = ConvBNLayer(3, in_c, 3, 2, 1, act="hardswish", **conv)
        blocks = []
        for kernel, expanded, out, se, act, stride in table:
            hidden, out_c = make_divisible(expanded * scale), make_divisible(out * scale)
            gate = (lambda c: SqueezeExcitation(c, lin.se_squeeze(c), lin.se_slope)) if se else None
            blocks.append(InvertedResidual(in_c, hidden, out_c, stride, stride == 1 and in_c == out_c,
                                           kernel=kernel, act=act, se=gate,
                                           expand=lin.expand_always or hidden != in_c, **conv))
            in_c = out_c
        self.blocks = nn.Sequential(*blocks)
        if lin.paddle_tail:
            last_c, head_c = make_divisible(last_width * scale), 1280
        else:
            last_c, head_c = 6 * in_c, make_divisible(head_width * scale)
        self.lastconv = ConvBNLayer(in_c, last_c, 1, 1, 0, act="hardswish", **conv)
        self.pool = nn.AdaptiveAvgPool2D(1)
        linear_attr = None if lin.paddle_tail else torch_linear_attr
        self.pre_fc = nn.Linear(last_c, head_c, weight_attr=linear_attr and linear_attr(),
                                bias_attr=False if lin.paddle_tail else None)
        self.dropout = nn.Dropout(dropout, mode=lin.dropout_mode)
        self.fc = nn.Linear(head_c, class_dim, weight_attr=linear_attr and linear_attr())

    @property
    def arch_name(self):
        return f"mobilenet_v3_{self.size}"

    def config(self):
        """The constructor's arguments: type(model)(**model.config()) builds the same network."""
        return {"class_dim": self.class_dim, "scale": self.scale, "size": self.size,
                "variant": self.variant, "dropout": self.dropout_p}

    def forward(self, x):
        x = self.pool(self.lastconv(self.blocks(self.conv1(x))))
        # reshape, not flatten: Lite's x86 opt crashes on Paddle 3's flatten op (see the notes).
        x = F.hardswish(self.pre_fc(paddle.reshape(x, [-1, x.shape[1]])))
        return self.fc(self.dropout(x))


def mobilenet_v3_small(**kwargs):
    return MobileNetV3(size="small", **kwargs)


def mobilenet_v3_large(**kwargs):
    return MobileNetV3(size="large", **kwargs)
