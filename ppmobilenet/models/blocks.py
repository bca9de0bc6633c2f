"""Building blocks shared by MobileNetV1 and MobileNetV2.

Each block mirrors a helper of the fluid demo (`conv_bn_layer`, `depthwise_separable`) or of the
fluid-era MobileNetV2 (`inverted_residual_unit`), creating its parameters in the same order.
"""
import paddle
from paddle import nn

# fluid's MSRA() is uniform Kaiming on fan-in: U(-sqrt(6/fan_in), +sqrt(6/fan_in)).
MSRA = nn.initializer.KaimingUniform


class ReLU6(nn.Layer):
    """relu6 as clip(x, 0, 6): Paddle 3 exports relu6 without the `threshold` attribute that
    Paddle Lite's opt requires, while clip converts cleanly (see the notes)."""

    def forward(self, x):
        return paddle.clip(x, 0.0, 6.0)


_ACTIVATIONS = {"relu": nn.ReLU, "relu6": ReLU6, None: nn.Identity}


class ConvBNLayer(nn.Layer):
    """The seed's `conv_bn_layer`: conv (MSRA, no bias) -> batch_norm (with its act)."""

    def __init__(self, in_channels, out_channels, filter_size, stride, padding, num_groups=1,
                 act="relu"):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, filter_size, stride=stride,
                              padding=padding, groups=num_groups,
                              weight_attr=paddle.ParamAttr(initializer=MSRA()), bias_attr=False)
        # fluid.layers.batch_norm defaults: momentum 0.9, epsilon 1e-5, scale 1, offset 0.
        self.bn = nn.BatchNorm2D(out_channels, momentum=0.9, epsilon=1e-5)
        self.act = _ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Layer):
    """The seed's `depthwise_separable`: a 3x3 depthwise conv_bn, then a 1x1 pointwise conv_bn.

    Widths follow the seed's own rounding: int(num_filters * scale) for each argument.
    """

    def __init__(self, in_channels, num_filters1, num_filters2, num_groups, stride, scale):
        super().__init__()
        self.depthwise = ConvBNLayer(in_channels, int(num_filters1 * scale), 3, stride, 1,
                                     num_groups=int(num_groups * scale))
        self.pointwise = ConvBNLayer(int(num_filters1 * scale), int(num_filters2 * scale), 1, 1, 0)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Layer):
    """fluid-era MobileNetV2's `inverted_residual_unit`: 1x1 expansion (always, even when t=1),
    3x3 depthwise, linear 1x1 projection, and the identity shortcut when asked."""

    def __init__(self, in_channels, out_channels, stride, expansion, use_shortcut):
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.expand = ConvBNLayer(in_channels, hidden, 1, 1, 0, act="relu6")
        self.dwise = ConvBNLayer(hidden, hidden, 3, stride, 1, num_groups=hidden, act="relu6")
        self.linear = ConvBNLayer(hidden, out_channels, 1, 1, 0, act=None)
        self.use_shortcut = use_shortcut

    def forward(self, x):
        y = self.linear(self.dwise(self.expand(x)))
        return x + y if self.use_shortcut else y
