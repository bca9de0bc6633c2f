"""The sources' own model code, as the reference for their weights (test-only).

- paddle.vision: ships with Paddle.
- PaddleClas: the `paddleclas` wheel (installed --no-deps) carries its model modules at
  paddleclas/ppcls/arch/backbone/...; ppcls's package __init__ files pull its whole runtime, so
  the packages are entered without running them, and the one helper the model modules import
  for downloading weights (utils.save_load) is replaced by a stand-in that refuses to download.
- torchvision: the PyPI wheel for torch 2.13 is a CUDA build whose compiled ops cannot load
  beside the CPU torch, and its package __init__ then fails registering them; its model code is
  plain PyTorch, so the package is entered without running that __init__ either.
Each filler writes random values into EVERY tensor, BatchNorm statistics included.
"""
import importlib
import logging
import importlib.util
import os
import sys
import types

import numpy as np


def _bare_package(name, folder):
    """A package module for `folder` whose __init__.py is not run."""
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [folder]
        module.__package__ = name
        sys.modules[name] = module
    return sys.modules[name]


def paddleclas_module(relative):
    """relative: "legendary_models.mobilenet_v3", "model_zoo.mobilenet_v2", ... -> the module."""
    if "ppcls" in sys.modules:
        return importlib.import_module("ppcls.arch.backbone." + relative)
    spec = importlib.util.find_spec("paddleclas")
    if spec is None:
        raise ImportError("paddleclas is not installed: pip install --no-deps paddleclas==2.6.0")
    root = os.path.join(os.path.dirname(spec.origin), "ppcls")
    for pkg in ("", ".arch", ".arch.backbone", ".arch.backbone.base", ".arch.backbone.legendary_models",
                ".arch.backbone.model_zoo", ".utils"):
        _bare_package("ppcls" + pkg, os.path.join(root, *pkg.split(".")[1:]))
    if "ppcls.utils.save_load" not in sys.modules:
        stand_in = types.ModuleType("ppcls.utils.save_load")

        def load_dygraph_pretrain(*args, **kwargs):
            raise RuntimeError("the tests never download weights")
        stand_in.load_dygraph_pretrain = load_dygraph_pretrain
        sys.modules["ppcls.utils.save_load"] = stand_in
        # the model classes log through ppcls's logger, which its engine sets up first
        importlib.import_module("ppcls.utils.logger").init_logger(log_level=logging.ERROR)
    return importlib.import_module("ppcls.arch.backbone." + relative)


def paddleclas_model(relative, factory, **kwargs):
    """paddleclas_model("model_zoo.mobilenet_v2", "MobileNetV2_x0_5") -> the model. Built under a
    fresh parameter-name scope: PaddleClas's V2 names its parameters (`conv1_1_weights`), and
    dygraph refuses a name twice in one scope."""
    import paddle
    with paddle.utils.unique_name.guard():
        return getattr(paddleclas_module(relative), factory)(**kwargs)


def torchvision_models():
    """-> (torchvision.models.mobilenetv2, torchvision.models.mobilenetv3)."""
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        if spec is None:
            raise ImportError("torchvision is not installed: pip install torchvision==0.28.0")
        _bare_package("torchvision", os.path.dirname(spec.origin))
    return (importlib.import_module("torchvision.models.mobilenetv2"),
            importlib.import_module("torchvision.models.mobilenetv3"))


def _random_value(name, shape, fan_in, rng):
    if name.endswith(("_variance", "running_var")):
        return rng.uniform(0.5, 2.0, shape)
    if name.endswith(("_mean", "running_mean", ".bias")):
        return rng.normal(0.0, 0.2, shape)
    if len(shape) == 1:                                    # BN scale
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)


def _spread_statistics(x, rng):
    """A BN input batch (N, C, H, W) -> random statistics near its own: every channel's mean
    moved by 0.3 of its deviation at most a few times, its variance scaled by exp(N(0, 0.3)).
    A swapped or misplaced statistic then changes the output, while the activations keep a sane
    size through 50 layers (statistics drawn blind make them grow a thousandfold)."""
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    # a channel that hardly varies (a dead ReLU) would divide float rounding by sqrt(epsilon)
    var = np.maximum(var, 0.1 * var.mean() + 1e-2)
    return ((mean + rng.normal(0.0, 0.3, mean.shape) * np.sqrt(var)).astype(np.float32),
            (var * np.exp(rng.normal(0.0, 0.3, var.shape))).astype(np.float32))


def _offset(shape, rng):
    return rng.uniform(BETA[0], BETA[1], shape).astype(np.float32)


BETA = (0.5, 1.5)
CALIBRATION_SHAPE = (8, 3, 64, 64)


def fill_paddle(model, seed):
    """Every tensor of a Paddle layer set to random values; each BatchNorm's statistics are drawn
    near those of its own input, in one eval-mode pass over a random batch, layer after layer.
    -> the model, in eval mode."""
    import paddle
    rng = np.random.RandomState(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        shape = list(tensor.shape)
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]  # Linear: [in, out]
        state[name] = _random_value(name, shape, fan_in, rng).astype(np.float32)
    model.set_state_dict(state)

    def calibrate(norm, inputs):
        mean, var = _spread_statistics(inputs[0].numpy(), rng)
        norm._mean.set_value(mean)
        norm._variance.set_value(var)
        norm.bias.set_value(_offset(mean.shape, rng))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.sublayers()
             if isinstance(m, (paddle.nn.BatchNorm2D, paddle.nn.BatchNorm))]
    model.eval()
    with paddle.no_grad():
        model(paddle.to_tensor(rng.normal(0.0, 1.0, CALIBRATION_SHAPE).astype(np.float32)))
    for hook in hooks:
        hook.remove()
    return model


def fill_torch(model, seed):
    """fill_paddle for a torch module (torch's Linear is [out, in]: fan-in is its second axis)."""
    import torch
    rng = np.random.RandomState(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = tensor
            continue
        shape = list(tensor.shape)
        fan_in = int(np.prod(shape[1:])) if len(shape) >= 2 else shape[0]
        state[name] = torch.from_numpy(_random_value(name, shape, fan_in, rng).astype(np.float32))
    model.load_state_dict(state)

    def calibrate(norm, inputs):
        mean, var = _spread_statistics(inputs[0].numpy(), rng)
        norm.running_mean.copy_(torch.from_numpy(mean))
        norm.running_var.copy_(torch.from_numpy(var))
        norm.bias.copy_(torch.from_numpy(_offset(mean.shape, rng)))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    model.eval()
    with torch.no_grad():
        model(torch.from_numpy(rng.normal(0.0, 1.0, CALIBRATION_SHAPE).astype(np.float32)))
    for hook in hooks:
        hook.remove()
    return model


def relative_error(got, ref):
    """max |got - ref| over max |ref|: logits near zero do not blow it up."""
    return float(np.abs(np.asarray(got) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max())


def norm_error(got, ref):
    """The worst sample's ||got - ref|| / ||ref|| (2-norm over its logits)."""
    got, ref = np.asarray(got).reshape(len(ref), -1), np.asarray(ref).reshape(len(ref), -1)
    return float((np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)).max())
