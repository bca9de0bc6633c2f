"""Each model made ready for the engines: its weights (one .safetensors every engine starts
from), the export through ppmobilenet.deploy (Paddle Inference, ONNX, Lite's x86 .nb), the INT8
ONNX model, and the real images the engines run on: the demo digits, preprocessed as in eval."""
import os

import numpy as np
import paddle

from ppmobilenet.config import load_config
from ppmobilenet.data import build_dataset
from ppmobilenet.deploy import convert_lite
from ppmobilenet.deploy.export import export_model
from ppmobilenet.deploy.int8 import calibration_images, quantize_onnx
from ppmobilenet.deploy.onnx import convert_onnx
from ppmobilenet.io import atomic_output
from ppmobilenet.models import build_model_from_arch, mobilenet_v1, mobilenet_v2, mobilenet_v3
from ppmobilenet.weights import load_weights, save_safe_weights

from .specs import DEMO_CONFIG

SHARPEN = 30.0  # fresh weights give a near-uniform softmax; a sharper one makes agreement bite
QUIET = lambda m: None  # noqa: E731  (the export's progress lines)


def imagenet_ops(size):
    """The registry models' eval preprocessing: resize to size x size, ImageNet mean / std
    (in numpy on the 0-255 pixels, then CHW: the same numbers as ToTensor + Normalize)."""
    return [{"Resize": {"size": [size, size]}},
            {"Normalize": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                           "data_format": "HWC"}}, {"Transpose": {"order": [2, 0, 1]}}]


def demo_config(ops=None, overrides=()):
    """configs/demo.yaml with -o overrides, evaluated with `ops` [None: its own eval preprocessing,
    what its training runs use]."""
    cfg = load_config(DEMO_CONFIG, list(overrides))
    if ops:
        cfg["DataLoader"]["Eval"]["transforms"] = ops
    return cfg


def val_images(ops=None, limit=None):
    """-> (images [N, C, H, W] float32, labels [N]) of the demo digits' validation split,
    evenly spaced when limit is given (so every class shows up), preprocessed by ops."""
    ds = build_dataset(demo_config(ops), "Eval")
    items = [ds[int(i)] for i in (np.linspace(0, len(ds) - 1, limit).round() if limit else range(len(ds)))]
    return (np.stack([np.asarray(x, dtype="float32") for x, _ in items]),
            np.array([int(y) for _, y in items], dtype="int64"))


def write_inputs(path, ops, count=8):
    """The batch every inference engine runs and is compared on: `count` validation images."""
    x, y = val_images(ops, count)
    with atomic_output(path, suffix=".npz") as tmp:
        np.savez(tmp, x=x, y=y)
    return path


def peer_blocks(arch):
    """The block table of arch's network in ppmobilenet.models, for the PyTorch peer (whose
    process loads no Paddle: the table comes in its spec); None for a model it does not know."""
    name = arch["name"]
    if name.startswith("mobilenet_v3_"):
        return mobilenet_v3.SIZES[name[len("mobilenet_v3_"):]][:2]
    return {"mobilenet_v1": mobilenet_v1.SEED_BLOCKS, "mobilenet_v2": mobilenet_v2.BOTTLENECKS}.get(name)


def make_weights(arch, path, weights=None, own_dir=None, sharpen=SHARPEN):
    """-> (model in eval mode, path of its .safetensors). weights: a trained checkpoint, else
    seeded fresh weights with the classifier times `sharpen`."""
    paddle.seed(0)
    model = build_model_from_arch(arch)
    if weights:
        load_weights(model, weights, own_dir=own_dir)
    else:
        state = model.state_dict()
        state["fc.weight"] = state["fc.weight"] * sharpen
        model.set_state_dict(state)
    model.eval()
    return model, save_safe_weights(path, model, arch)


def export(key, arch, size, work_dir, weights=None, lite=None, onnx=True, ops=None, log=print):
    """-> {"export_dir", "weights", "onnx", "nb", "lite_python", "notes"}. lite: a LiteRuntime,
    or why there is none; ONNX or Lite that cannot be made is a note, and its rows are skipped."""
    d = os.path.join(work_dir, "models", f"{key}_{size}")
    model, wfile = make_weights(arch, os.path.join(d, "weights.safetensors"), weights, work_dir)
    cfg = demo_config(ops, [f"Arch.{k}={v}" for k, v in arch.items()] + [
        f"Global.image_shape=[3, {size}, {size}]", f"Global.save_inference_dir={os.path.join(d, 'export')}"])
    out = {"export_dir": cfg["Global"]["save_inference_dir"], "weights": wfile, "onnx": None, "nb": None,
           "notes": [f"lite: {lite}"] if isinstance(lite, str) else []}
    export_model(cfg, model=model, onnx=False, label_file=False, log=QUIET)
    try:
        out["onnx"] = convert_onnx(out["export_dir"], log=QUIET) if onnx else None
    except Exception as e:  # a missing paddle2onnx is a DeployError: a note, the rest goes on
        out["notes"].append(f"onnx: {e}")
    try:
        out["nb"] = convert_lite(out["export_dir"], ["x86"], runtime=lite, log=QUIET)["x86"] \
            if lite and not isinstance(lite, str) else None
    except Exception as e:
        out["notes"].append(f"lite: {str(e).splitlines()[0]}")
    out["lite_python"] = lite.python if out["nb"] else None
    log(f"{key} @{size}: exported to {out['export_dir']}" + "".join(f"; {n}" for n in out["notes"]))
    return out


def int8_model(onnx_file, calib_images, ops=None, log=print):
    """The INT8 ONNX model of onnx_file, calibrated on the demo digits' training split."""
    return quantize_onnx(onnx_file, calibration_images(demo_config(ops), calib_images), log=log)


def fake_quant_weights(state, bits=8):
    """Weight-only quantization as Lite's opt QUANT_INT8 stores it (symmetric, abs-max per
    output channel), rounded and scaled back: {name: array} -> {name: array}. Lite's x86
    runtime cannot run a weight-quantised .nb (its outputs are garbage), so this emulation is
    how the accuracy of the ARM .nb's weights is measured. Conv weights [out, in, kh, kw] are
    scaled per out, fc weights [in, out] per out; BN statistics and biases stay float."""
    qmax, out = 2 ** (bits - 1) - 1, {}
    for k, w in state.items():
        w = np.asarray(w)
        if w.ndim not in (2, 4):
            out[k] = w
            continue
        s = (np.abs(w).reshape(w.shape[0], -1).max(1).reshape(-1, 1, 1, 1) if w.ndim == 4
             else np.abs(w).max(0, keepdims=True)) / qmax
        s = np.where(s == 0, 1.0, s)
        out[k] = (np.clip(np.round(w / s), -qmax, qmax) * s).astype(w.dtype)
    return out
