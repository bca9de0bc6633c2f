"""MobileNetV2 in its two lineages.

variant="paddle": the fluid-era PaddlePaddle/models network (and PaddleClas's, the same one), with
the seed's three differences from V1: the shortcut, the 1x1 expansion before the depthwise conv
(kept even in the t=1 block, as the released `conv2_1_expand_*` weights show) and the linear
projection. Widths are int(c * scale).
variant="torchvision" (torchvision and paddle.vision): widths rounded to multiples of 8, no
expansion conv where t=1, the shortcut wherever stride 1 keeps the width, dropout 0.2 before fc.
"""
import paddle
from paddle import nn

from .blocks import MSRA, ConvBNLayer, InvertedResidual, make_divisible, torch_conv_init, torch_linear_attr

# (expansion t, channels c, repeats n, first stride s)
BOTTLENECKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
VARIANTS = ("paddle", "torchvision")


class MobileNetV2(nn.Layer):
    """MobileNetV2 returning logits."""
    arch_name = "mobilenet_v2"

    def __init__(self, class_dim=1000, scale=1.0, variant="paddle"):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"MobileNetV2 scale must be > 0, got {scale!r}")
        if variant not in VARIANTS:
            raise ValueError(f"MobileNetV2 variant must be one of {VARIANTS}, got {variant!r}")
        self.class_dim, self.scale, self.variant = class_dim, scale, variant
        paddle_like = variant == "paddle"
        width = (lambda c: int(c * scale)) if paddle_like else (lambda c: make_divisible(c * scale))
        init = MSRA if paddle_like else torch_conv_init
        in_c = width(32)
        self.conv1 = ConvBNLayer(3, in_c, 3, stride=2, padding=1, act="relu6", weight_init=init)
        blocks = []
        for t, c, n, s in BOTTLENECKS:
            out_c = width(c)
            for i in range(n):
                stride = s if i == 0 else 1
                # fluid adds the shortcut to every block after a group's first one; torchvision
                # to every block with stride 1 and equal widths (its x0.25 first block too).
                shortcut = i > 0 if paddle_like else (stride == 1 and in_c == out_c)
                blocks.append(InvertedResidual(in_c, int(round(in_c * t)), out_c, stride, shortcut,
                                               expand=paddle_like or t != 1, weight_init=init))
                in_c = out_c
        self.blocks = nn.Sequential(*blocks)
        last_c = (int(1280 * scale) if scale > 1.0 else 1280) if paddle_like else \
            make_divisible(1280 * max(1.0, scale))
        self.conv9 = ConvBNLayer(in_c, last_c, 1, 1, 0, act="relu6", weight_init=init)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.dropout = None if paddle_like else nn.Dropout(0.2)
        self.fc = nn.Linear(last_c, class_dim, weight_attr=None if paddle_like else torch_linear_attr())

    def config(self):
        """The constructor's arguments: type(model)(**model.config()) builds the same network."""
        return {"class_dim": self.class_dim, "scale": self.scale, "variant": self.variant}

    def forward(self, x):
        x = self.pool(self.conv9(self.blocks(self.conv1(x))))
        x = paddle.reshape(x, [-1, x.shape[1]])
        return self.fc(self.dropout(x) if self.dropout is not None else x)
