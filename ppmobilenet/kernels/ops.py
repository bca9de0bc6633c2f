"""The compiled operators as Python functions (dygraph), once their library is loaded."""
import paddle
from paddle import _C_ops

from .build import BuildFailed, library_path

_loaded = []  # the library registered in this process (Paddle registers an operator once)


def load(log=None):
    """Build (first use on this machine) and register the operators -> the library's path.
    Raises BuildFailed."""
    if _loaded:
        return _loaded[0]
    path = library_path(log)
    try:
        paddle.utils.cpp_extension.load_op_meta_info_and_register_op(path)
    except Exception as e:  # a library Paddle cannot load is as good as none
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BuildFailed(f"the compiled kernels in {path} do not load: {first}") from None
    _loaded.append(path)
    return path


DEPTHWISE_OPS = {3: "ppm_depthwise3x3", 5: "ppm_depthwise5x5"}  # filter size -> operator


def depthwise(x, weight, stride):
    """Depthwise conv with a 3x3 (padding 1) or 5x5 (padding 2) filter [C, 1, k, k], stride 1 or 2,
    NCHW float32 on CPU, with its gradients."""
    return _C_ops._run_custom_op(DEPTHWISE_OPS[weight.shape[-1]], x, weight, int(stride))[0]


ACTIVATIONS = {None: 0, "relu": 1, "clip6": 2, "hardswish": 3}  # kernels.h: Activation


def bn_act(x, bn, act=None):
    """Training-mode BatchNorm (the layer `bn`: its parameters, and its running statistics,
    updated in place) followed by the activation `act` (None, "relu", "clip6", "hardswish")."""
    return _C_ops._run_custom_op("ppm_bn_act", x, bn.weight, bn.bias, bn._mean, bn._variance,
                                 float(bn._momentum), float(bn._epsilon), ACTIVATIONS[act])[0]


def bn_act_inference(x, bn, act=None):
    """Inference-mode BatchNorm (the running statistics of the layer `bn`) followed by `act`;
    no gradient: for paddle.no_grad only."""
    return _C_ops._run_custom_op("ppm_bn_act_infer", x, bn.weight, bn.bias, bn._mean, bn._variance,
                                 float(bn._epsilon), ACTIVATIONS[act])[0]
