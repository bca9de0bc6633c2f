"""Temporary shim: the packed depthwise path moved to ppmobilenet/kernels/ (packed.py, layers.py)."""
from ..kernels.layers import use_packed_depthwise
from ..kernels.packed import MAX_PLANE, PackedDepthwiseConv2D, packed_depthwise_conv

__all__ = ["MAX_PLANE", "PackedDepthwiseConv2D", "packed_depthwise_conv", "use_packed_depthwise"]
