"""Which layers the CPU paths take over, and the layer classes that run the compiled kernels.

A layer is switched by setting its class on the instance: it stays what it was (an nn.Conv2D, a
ConvBNLayer) with the same parameters, names and state_dict, and its forward takes the fast path
only in dygraph on CPU float32 (and, for BatchNorm, in training mode); a traced program
(paddle.jit, export, Lite) records Paddle's own operators.
"""
import paddle
from paddle import nn

from ..models.blocks import ConvBNLayer, ReLU6
from . import ops
from .packed import PackedDepthwiseConv2D


def _compiled_path(x):
    return paddle.in_dynamic_mode() and x.place.is_cpu_place() and x.dtype == paddle.float32


class CompiledDepthwiseConv2D(nn.Conv2D):
    """An nn.Conv2D whose dygraph CPU float32 forward (and backward) runs ppm_depthwise3x3 or,
    for MobileNetV3's 5x5 filters, ppm_depthwise5x5."""

    def forward(self, x):
        if _compiled_path(x):
            return ops.depthwise(x, self.weight, self._stride[0])
        return super().forward(x)


# the activations ppm_bn_act fuses, by the class of ConvBNLayer.act
FUSED_ACTIVATIONS = {nn.Identity: None, nn.ReLU: "relu", ReLU6: "clip6", nn.Hardswish: "hardswish"}


class FusedConvBNLayer(ConvBNLayer):
    """A ConvBNLayer whose BatchNorm and activation run as one compiled operator in dygraph on
    CPU: when training (batch statistics; the running ones updated as Paddle's batch_norm does),
    and when evaluating under paddle.no_grad (the running statistics)."""

    def forward(self, x):
        x = self.conv(x)
        bn = self.bn
        if type(bn) is nn.BatchNorm2D and _compiled_path(x):
            if bn.training and not bn._use_global_stats:
                return ops.bn_act(x, bn, FUSED_ACTIVATIONS[type(self.act)])
            # use_global_stats=False asks for batch statistics in eval mode too: Paddle's then
            if not bn.training and bn._use_global_stats is None and not paddle.is_grad_enabled():
                return ops.bn_act_inference(x, bn, FUSED_ACTIVATIONS[type(self.act)])
        return self.act(bn(x))


CONV_CLASSES = (nn.Conv2D, PackedDepthwiseConv2D, CompiledDepthwiseConv2D)


def is_depthwise(layer, kernel):
    """A plain (or already switched) kernel x kernel depthwise conv that keeps the plane (padding
    kernel // 2), equal strides of 1 or 2, NCHW, no bias."""
    pad = kernel // 2
    return (type(layer) in CONV_CLASSES
            and layer._groups == layer._in_channels == layer._out_channels
            and list(layer._kernel_size) == [kernel, kernel]
            and layer._padding in (pad, [pad, pad], (pad, pad))
            and layer._padding_mode == "zeros" and list(layer._dilation) == [1, 1]
            and layer._stride[0] == layer._stride[1] and layer._stride[0] in (1, 2)
            and layer._data_format == "NCHW" and layer.bias is None)


def is_depthwise3x3(layer):
    return is_depthwise(layer, 3)


def is_compiled_depthwise(layer):
    """A depthwise conv the compiled kernels run: 3x3 (padding 1) or 5x5 (padding 2)."""
    return is_depthwise(layer, 3) or is_depthwise(layer, 5)


def switch_layers(model, cls, which=is_depthwise3x3):
    """Give every layer of `model` that `which` takes (default: the 3x3 depthwise convs) the
    class `cls`, in place -> how many."""
    count = 0
    for layer in model.sublayers(include_self=True):
        if which(layer):
            layer.__class__ = cls  # keeps the parameters and their names
            count += 1
    return count


def is_fusable_conv_bn(layer):
    """A ConvBNLayer over a plain NCHW BatchNorm2D with batch statistics and an activation
    ppm_bn_act knows."""
    return (type(layer) in (ConvBNLayer, FusedConvBNLayer) and type(layer.bn) is nn.BatchNorm2D
            and layer.bn._data_format == "NCHW" and not layer.bn._use_global_stats
            and type(layer.act) in FUSED_ACTIVATIONS)


def use_compiled_kernels(model):
    """The compiled kernels (ops.load() must have succeeded) for every 3x3 and 5x5 depthwise conv
    and every conv + BatchNorm + activation block of `model` -> (depthwise convs, fused blocks)."""
    blocks = switch_layers(model, FusedConvBNLayer, is_fusable_conv_bn)
    return switch_layers(model, CompiledDepthwiseConv2D, is_compiled_depthwise), blocks


def use_packed_depthwise(model):
    """The packed pure-Paddle path for every 3x3 depthwise conv (small planes only)."""
    return switch_layers(model, PackedDepthwiseConv2D)
