"""MobileNetV2 as in the fluid-era PaddlePaddle/models, with the seed's three differences from V1:
the shortcut, the 1x1 expansion before the depthwise conv, and the linear projection."""
import paddle
from paddle import nn

from .blocks import ConvBNLayer, InvertedResidual

# (expansion t, channels c, repeats n, first stride s)
BOTTLENECKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Layer):
    """MobileNetV2 returning logits. Unlike torchvision, the t=1 block keeps its expansion conv,
    as the fluid model (and its released `conv2_1_expand_*` weights) does."""

    def __init__(self, class_dim=1000, scale=1.0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"MobileNetV2 scale must be > 0, got {scale!r}")
        self.class_dim, self.scale = class_dim, scale
        in_c = int(32 * scale)
        self.conv1 = ConvBNLayer(3, in_c, 3, stride=2, padding=1, act="relu6")
        blocks = []
        for t, c, n, s in BOTTLENECKS:
            out_c = int(c * scale)
            for i in range(n):
                stride = s if i == 0 else 1
                # fluid adds the shortcut to every block after a group's first one: exactly
                # the blocks with stride 1 and equal channels.
                blocks.append(InvertedResidual(in_c, out_c, stride, t, use_shortcut=i > 0))
                in_c = out_c
        self.blocks = nn.Sequential(*blocks)
        last_c = int(1280 * scale) if scale > 1.0 else 1280
        self.conv9 = ConvBNLayer(in_c, last_c, 1, 1, 0, act="relu6")
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(last_c, class_dim)

    def forward(self, x):
        x = self.pool(self.conv9(self.blocks(self.conv1(x))))
        return self.fc(paddle.reshape(x, [-1, x.shape[1]]))
