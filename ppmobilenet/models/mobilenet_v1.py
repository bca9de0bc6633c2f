"""MobileNetV1: the fluid demo's `MobileNet.net` graph on paddle.nn, plus the classic head.

Read it beside `MobileNet.net` in the seed: the body lists the same 13 depthwise-separable calls
with the same (num_filters1, num_filters2, num_groups, stride) and the same int(x * scale).
"""
import paddle
from paddle import nn

from .blocks import MSRA, ConvBNLayer, DepthwiseSeparable

# (num_filters1, num_filters2, num_groups, stride) of the seed's depthwise_separable calls.
SEED_BLOCKS = [
    (32, 64, 32, 1),      # 56x56
    (64, 128, 64, 2),
    (128, 128, 128, 1),   # 28x28
    (128, 256, 128, 2),
    (256, 256, 256, 1),   # 14x14
    (256, 512, 256, 2),
    *[(512, 512, 512, 1)] * 5,
    (512, 1024, 512, 2),  # 7x7
    (1024, 1024, 1024, 1),
]

HEADS = ("demo", "classic")


class MobileNetV1(nn.Layer):
    """MobileNetV1 returning logits.

    head="demo": the seed's head, a 1x1 conv to class_dim (bias, no BN, no act), global average
    pooling and an fc class_dim -> class_dim (MSRA). Parameters, shapes and their creation order
    are those of the seed graph.
    head="classic": global average pooling and an fc 1024*scale -> class_dim, as the released
    fluid MobileNetV1, the paper and PaddleClas.
    """

    arch_name = "mobilenet_v1"

    def __init__(self, class_dim=1000, scale=1.0, head="demo"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"MobileNetV1 head must be one of {HEADS}, got {head!r}")
        if not scale > 0:
            raise ValueError(f"MobileNetV1 scale must be > 0, got {scale!r}")
        self.class_dim, self.scale, self.head = class_dim, scale, head
        self.conv1 = ConvBNLayer(3, int(32 * scale), 3, stride=2, padding=1)  # 112x112
        blocks, in_channels = [], int(32 * scale)
        for nf1, nf2, groups, stride in SEED_BLOCKS:
            blocks.append(DepthwiseSeparable(in_channels, nf1, nf2, groups, stride, scale))
            in_channels = int(nf2 * scale)
        self.blocks = nn.Sequential(*blocks)
        if head == "demo":
            # fluid.layers.conv2d without param_attr: its own default Normal(0, sqrt(2/fan_in)),
            # and a zero bias.
            self.class_conv = nn.Conv2D(
                in_channels, class_dim, 1,
                weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(
                    0.0, (2.0 / in_channels) ** 0.5)))
            fc_in = class_dim
        else:
            fc_in = in_channels
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(fc_in, class_dim, weight_attr=paddle.ParamAttr(initializer=MSRA()))

    def config(self):
        """The constructor's arguments: type(model)(**model.config()) builds the same network."""
        return {"class_dim": self.class_dim, "scale": self.scale, "head": self.head}

    def forward(self, x):
        x = self.blocks(self.conv1(x))
        if self.head == "demo":
            x = self.class_conv(x)
        # reshape, not flatten: Lite's x86 opt crashes on Paddle 3's flatten op (see the notes).
        x = paddle.reshape(self.pool(x), [-1, x.shape[1]])
        return self.fc(x)


class MobileNet:
    """The seed's interface: `MobileNet().net(input, class_dim, scale)` returns softmax
    probabilities. The layer is built on the first call and reused (`.model`)."""

    def __init__(self):
        self.model = None

    def name(self):
        return "mobile-net"

    def net(self, input, class_dim=1000, scale=1.0):
        if self.model is None:
            self.model = MobileNetV1(class_dim=class_dim, scale=scale, head="demo")
        elif (class_dim, scale) != (self.model.class_dim, self.model.scale):
            raise ValueError(
                f"MobileNet.net was built with class_dim={self.model.class_dim}, "
                f"scale={self.model.scale}; this call asks for class_dim={class_dim}, "
                f"scale={scale}. Create a new MobileNet() for another network.")
        return nn.functional.softmax(self.model(input), axis=-1)
