"""Building blocks shared by MobileNetV1, V2 and V3.

ConvBNLayer and DepthwiseSeparable mirror the fluid demo's `conv_bn_layer` and
`depthwise_separable`, creating their parameters in the same order; InvertedResidual is the
fluid-era MobileNetV2 unit, grown the options V3 and the torchvision lineage need.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

# fluid's MSRA() is uniform Kaiming on fan-in: U(-sqrt(6/fan_in), +sqrt(6/fan_in)).
MSRA = nn.initializer.KaimingUniform


def torch_conv_init():
    """torchvision's conv init: kaiming_normal_(mode="fan_out"), gain sqrt(2)."""
    return nn.initializer.KaimingNormal(mode="fan_out")


def torch_linear_attr():
    """torchvision's MobileNet Linear init: normal(0, 0.01)."""
    return paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.01))

# BatchNorm (momentum, epsilon) in Paddle's convention (running = momentum * running + ...):
FLUID_BN = (0.9, 1e-5)       # fluid.layers.batch_norm, PaddleClas, torch's default
TORCH_V3_BN = (0.99, 1e-3)   # torchvision's MobileNetV3: BatchNorm2d(eps=0.001, momentum=0.01)


def make_divisible(value, divisor=8):
    """The nearest multiple of `divisor` (at least `divisor`), never 10% below `value`: the
    channel rounding of MobileNetV3 and of torchvision's MobileNetV2."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ReLU6(nn.Layer):
    """relu6 as clip(x, 0, 6): Paddle 3 exports relu6 without the `threshold` attribute that
    Paddle Lite's opt requires, while clip converts cleanly (see the notes)."""

    def forward(self, x):
        return paddle.clip(x, 0.0, 6.0)


_ACTIVATIONS = {"relu": nn.ReLU, "relu6": ReLU6, "hardswish": nn.Hardswish, None: nn.Identity}


class ConvBNLayer(nn.Layer):
    """The seed's `conv_bn_layer`: conv (no bias) -> batch_norm (with its act).

    weight_init: the conv's initializer class (MSRA, fluid's; None: Paddle's default).
    bn: (momentum, epsilon). bn_decay=False exempts the BN scale and offset from L2 decay.
    """

    def __init__(self, in_channels, out_channels, filter_size, stride, padding, num_groups=1,
                 act="relu", weight_init=MSRA, bn=FLUID_BN, bn_decay=True):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, filter_size, stride=stride,
                              padding=padding, groups=num_groups,
                              weight_attr=paddle.ParamAttr(initializer=weight_init()) if weight_init else None,
                              bias_attr=False)
        no_decay = None if bn_decay else paddle.ParamAttr(regularizer=paddle.regularizer.L2Decay(0.0))
        self.bn = nn.BatchNorm2D(out_channels, momentum=bn[0], epsilon=bn[1],
                                 weight_attr=no_decay, bias_attr=no_decay)
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


class SqueezeExcitation(nn.Layer):
    """MobileNetV3's channel gate: global pool, 1x1 reduce (bias) + ReLU, 1x1 expand (bias),
    hard-sigmoid clip(slope * s + 0.5, 0, 1), times the input."""

    def __init__(self, channels, squeezed, slope):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.reduce = nn.Conv2D(channels, squeezed, 1)
        self.expand = nn.Conv2D(squeezed, channels, 1)
        self.slope = slope

    def forward(self, x):
        gate = self.expand(F.relu(self.reduce(self.pool(x))))
        return x * F.hardsigmoid(gate, slope=self.slope, offset=0.5)


class InvertedResidual(nn.Layer):
    """The inverted residual: 1x1 expansion to `hidden` (left out when expand=False), k x k
    depthwise, optional squeeze-excitation (`se`: a fn(channels) -> layer), linear 1x1
    projection, and the identity shortcut when asked. `conv` holds ConvBNLayer's options."""

    def __init__(self, in_channels, hidden, out_channels, stride, use_shortcut, kernel=3,
                 act="relu6", expand=True, se=None, **conv):
        super().__init__()
        self.expand = ConvBNLayer(in_channels, hidden, 1, 1, 0, act=act, **conv) if expand else None
        self.dwise = ConvBNLayer(hidden, hidden, kernel, stride, (kernel - 1) // 2,
                                 num_groups=hidden, act=act, **conv)
        self.se = se(hidden) if se else None
        self.linear = ConvBNLayer(hidden, out_channels, 1, 1, 0, act=None, **conv)
        self.use_shortcut = use_shortcut

    def forward(self, x):
        y = self.dwise(self.expand(x) if self.expand is not None else x)
        y = self.linear(self.se(y) if self.se is not None else y)
        return x + y if self.use_shortcut else y
