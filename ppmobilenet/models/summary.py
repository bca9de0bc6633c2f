"""Parameter and multiply-add counts (paddle.flops fails under numpy 2, see the notes)."""
import numpy as np
import paddle
from paddle import nn


def count_parameters(layer, trainable_only=True):
    """Number of parameter values; BatchNorm's running statistics are non-trainable."""
    return sum(int(np.prod(p.shape)) for p in layer.parameters()
               if p.trainable or not trainable_only)


def count_macs(layer, input_size=224):
    """Multiply-adds of one forward pass on a 3 x H x W image, input_size = H = W or (H, W)
    (convs and fcs, which hold all but a fraction of a percent of the work)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    macs = []

    def conv_hook(conv, inputs, output):
        _, out_c, out_h, out_w = output.shape
        in_c = inputs[0].shape[1]
        k_h, k_w = conv.weight.shape[2:]
        macs.append(out_c * out_h * out_w * (in_c // conv._groups) * k_h * k_w)

    def linear_hook(linear, inputs, output):
        macs.append(int(np.prod(linear.weight.shape)))

    hooks = [sub.register_forward_post_hook(conv_hook if isinstance(sub, nn.Conv2D) else linear_hook)
             for sub in layer.sublayers() if isinstance(sub, (nn.Conv2D, nn.Linear))]
    was_training = layer.training
    layer.eval()
    try:
        with paddle.no_grad():
            layer(paddle.zeros([1, 3, int(h), int(w)]))
    finally:
        for hook in hooks:
            hook.remove()
        layer.train(was_training)
    return sum(macs)


def summary(layer, input_size=224):
    return {"params": count_parameters(layer), "macs": count_macs(layer, input_size)}
