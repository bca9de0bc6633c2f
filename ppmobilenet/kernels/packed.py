"""The pure-Paddle fallback for small depthwise convolutions: all samples of a channel in one
plane. It runs where the compiled kernels cannot (no compiler, a failed build, switched off).

Paddle's CPU depthwise_conv2d kernels (forward and both gradients) pay a fixed cost of about
2-3 us for every (sample, channel) plane, whatever its size. MobileNet's late layers have many
channels on tiny planes: at batch 64 the demo model's 256 x 2x2 layer takes 38 ms a step, for
65k outputs (docs/benchmarks.md, finding 10).

A depthwise filter depends on the channel only, so the N planes of one channel can be laid side by
side, with a zero column between neighbours, and convolved as one plane: C planes instead of
N x C. Every output is the same sum of the same products as before, so the outputs and the input
gradients are identical, and the filter gradients agree to float rounding (~1e-6, relative).
Laying the planes out costs two transposes, which only pays off on small planes. So the packed
path runs on planes of at most MAX_PLANE pixels (8x8: 1.2-5.5x faster per layer; 14x14 is 0.5-0.8x
slower), and only in dygraph. A traced program (paddle.jit, export) keeps the plain conv.
The compiled kernel (layers.CompiledDepthwiseConv2D) is faster on every shape, so the two never
mix.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

MAX_PLANE = 64  # pixels (8x8)


def packed_depthwise_conv(x, weight, stride):
    """3x3 depthwise conv, padding 1, on NCHW x: the samples of each channel side by side."""
    n, c, h, w = x.shape
    gap = 1  # zero columns after each sample; (w + gap) % stride == 0 keeps strides aligned
    while (w + gap) % stride:
        gap += 1
    planes = x.transpose([1, 2, 0, 3])                                     # C, H, N, W
    planes = paddle.concat([planes, paddle.zeros([c, h, n, gap], x.dtype)], axis=3)
    y = F.conv2d(planes.reshape([1, c, h, n * (w + gap)]), weight, stride=stride, padding=1,
                 groups=c)
    step, w_out = (w + gap) // stride, (w - 1) // stride + 1
    y = y[:, :, :, :n * step].reshape([c, y.shape[2], n, step])[:, :, :, :w_out]
    return y.transpose([2, 0, 1, 3])                                       # N, C, H', W'


class PackedDepthwiseConv2D(nn.Conv2D):
    """An nn.Conv2D whose small planes take the packed path in dygraph. Same parameters, same
    state_dict, still an nn.Conv2D."""

    def forward(self, x):
        if paddle.in_dynamic_mode() and x.shape[2] * x.shape[3] <= MAX_PLANE:
            return packed_depthwise_conv(x, self.weight, self._stride[0])
        return super().forward(x)
