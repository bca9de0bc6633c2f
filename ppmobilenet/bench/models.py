"""The models the benchmark runs and how each is made ready: weights, export (Paddle Inference,
Lite x86 .nb, ONNX) through ppmobilenet.deploy.export_model, and the INT8 ONNX model."""
import os

import numpy as np

# key -> Arch (the registry's models at ImageNet's 1000 classes)
REGISTRY = {
    "v1_demo_x1.0": {"name": "mobilenet_v1", "class_num": 1000, "scale": 1.0, "head": "demo"},
    "v1_x0.25": {"name": "mobilenet_v1", "class_num": 1000, "scale": 0.25, "head": "classic"},
    "v1_x0.5": {"name": "mobilenet_v1", "class_num": 1000, "scale": 0.5, "head": "classic"},
    "v1_x0.75": {"name": "mobilenet_v1", "class_num": 1000, "scale": 0.75, "head": "classic"},
    "v1_x1.0": {"name": "mobilenet_v1", "class_num": 1000, "scale": 1.0, "head": "classic"},
    "v2_x1.0": {"name": "mobilenet_v2", "class_num": 1000, "scale": 1.0},
}
# configs/demo.yaml's model, at its own 64x64 input, and the same config at scale 1.0
DEMO_ARCH = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}
DEMO_MODELS = {"demo": DEMO_ARCH, "demo_x1.0": dict(DEMO_ARCH, scale=1.0)}
SHARPEN = 30.0  # fresh weights give a near-uniform softmax; a sharper one makes agreement checks bite


def resolve_models(names):
    out = []
    for n in names:
        if n not in REGISTRY:
            raise ValueError(f"--models: unknown model {n!r}; choose from {', '.join(REGISTRY)}")
        out.append(n)
    return out


def make_weights(arch, path, weights=None, seed=0, sharpen=SHARPEN, own_dir=None):
    """Write the model's weights as .pdparams (for Paddle) and .npz (for the PyTorch peer).
    weights: a trained .pdparams, else seeded fresh weights (classifier times `sharpen`);
    a pickle from outside own_dir (the benchmark's work folder) gets the untrusted warning."""
    import paddle
    from ppmobilenet.models import build_model_from_arch
    paddle.seed(seed)
    model = build_model_from_arch(arch)
    if weights:
        from ppmobilenet.deploy.weights import load_weights
        load_weights(model, weights, own_dir=own_dir)
    else:
        state = model.state_dict()
        state["fc.weight"] = state["fc.weight"] * sharpen
        model.set_state_dict(state)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    paddle.save(model.state_dict(), path + ".pdparams")
    np.savez(path + ".npz", **state)
    model.eval()
    return model


def export(key, arch, size, work_dir, weights=None, lite=True, onnx=True, log=print, ops=None):
    """-> {"export_dir", "pdparams", "npz", "onnx", "nb", "notes"}; Lite or ONNX that cannot be
    made is reported in notes (the caller decides whether that is fatal)."""
    from ppmobilenet.deploy import export_model
    from .inputs import eval_ops
    d = os.path.join(work_dir, "models", f"{key}_{size}")
    os.makedirs(d, exist_ok=True)
    prefix = os.path.join(d, "weights")
    model = make_weights(arch, prefix, weights, own_dir=work_dir)
    cfg = {"Global": {"image_shape": [3, size, size], "save_inference_dir": os.path.join(d, "export")},
           "Arch": dict(arch), "Export": {"softmax": True},
           "DataLoader": {"Eval": {"transforms": ops or eval_ops(size)}}, "Infer": {}}
    out = {"export_dir": cfg["Global"]["save_inference_dir"], "pdparams": prefix + ".pdparams",
           "npz": prefix + ".npz", "onnx": None, "nb": None, "notes": []}
    quiet = lambda m: None  # noqa: E731  (export_model's progress lines)
    export_model(cfg, model=model, onnx=False, log=quiet)
    if onnx:
        try:
            from ppmobilenet.deploy.onnx import convert_onnx
            out["onnx"] = convert_onnx(out["export_dir"], log=quiet)
        except Exception as e:  # a missing paddle2onnx is a DeployError; report, go on
            out["notes"].append(f"onnx: {e}")
    if lite:
        try:
            from ppmobilenet.deploy import convert_lite
            out["nb"] = convert_lite(out["export_dir"], ["x86"], log=quiet)["x86"]
        except Exception as e:
            out["notes"].append(f"lite: {str(e).splitlines()[0]}")
    log(f"{key} @{size}: exported to {out['export_dir']}"
        + "".join(f"; {n}" for n in out["notes"]))
    return out


def int8(prepared, size, calib_images, cache_dir=None, log=print, ops=None):
    """Add the INT8 ONNX model (calibrated on the demo digits' training split) to `prepared`."""
    from .inputs import load_split
    from .int8 import quantize_onnx
    if not prepared.get("onnx"):
        prepared["notes"].append("int8: no ONNX model to quantize")
        return prepared
    images, _ = load_split("train", size, limit=calib_images, cache_dir=cache_dir, ops=ops)
    prepared["int8"] = quantize_onnx(prepared["onnx"], images, log=log)
    return prepared
