"""The 1x1 convolutions of small planes as one batched matrix product (pure Paddle, dygraph).

A 1x1 conv over [N, C_in, H, W] is W[C_out, C_in] @ x[n] for every sample: paddle.matmul does
all N at once on MKL's GEMM, its gradients included. On planes of at most MAX_PLANE pixels
(16x16) that beats Paddle's oneDNN conv in a training step, most when the loader's workers
share the cores: in-process paired A/B, the demo model (planes 32x32 to 2x2) at batch 64, 6
rounds: the step 1.21x, the epoch with its data pipeline 1.13x; on larger planes it is not
faster (MobileNetV1 x1.0 224 batch 32, every 1x1 conv: 0.89x), so they keep the conv. The
products are the same, summed in another order: float rounding apart. A traced program
(paddle.jit, export, Lite) records the conv.
"""
import paddle
from paddle import nn

from .layers import switch_layers

MAX_PLANE = 256  # pixels (16x16)


class PointwiseMatmulConv2D(nn.Conv2D):
    """An nn.Conv2D (1x1, stride 1, no padding, no bias) whose small planes run as matmul in
    dygraph on CPU float32. Same parameters and state_dict."""

    def forward(self, x):
        n, c, h, w = x.shape
        if (h * w <= MAX_PLANE and paddle.in_dynamic_mode() and x.place.is_cpu_place()
                and x.dtype == paddle.float32):
            y = paddle.matmul(self.weight.reshape([self._out_channels, c]), x.reshape([n, c, h * w]))
            return y.reshape([n, self._out_channels, h, w])
        return super().forward(x)


def is_pointwise(layer):
    """A plain 1x1 NCHW conv, stride 1, no padding, one group, no bias."""
    return (type(layer) in (nn.Conv2D, PointwiseMatmulConv2D)
            and list(layer._kernel_size) == [1, 1] and list(layer._stride) == [1, 1]
            and layer._padding in (0, [0, 0], (0, 0)) and layer._groups == 1
            and list(layer._dilation) == [1, 1] and layer._data_format == "NCHW"
            and layer.bias is None)


def use_pointwise_matmul(model):
    """Give every plain 1x1 conv of `model` the class PointwiseMatmulConv2D -> how many."""
    return switch_layers(model, PointwiseMatmulConv2D, is_pointwise)
