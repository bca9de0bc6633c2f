"""Shared set-up of the deploy tests (test_export, test_lite, test_onnx, test_infer): real
weights on disk, real PNG digits, configs from configs/demo.yaml, the Lite interpreter."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo.yaml")
EVAL_TRANSFORMS = ("Infer.transforms=[{Resize: {size: 64}}, {CenterCrop: {size: 64}}, {ToTensor: {}}, "
                   "{Normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}]")
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def lite_or_skip():
    """The Lite runtime (from PPMOBILENET_LITE_PYTHON), or skip with the reason - but FAIL when
    PPMOBILENET_REQUIRE_LITE=1 (CI sets it, so a broken Lite set-up can never pass as a skip)."""
    from ppmobilenet.deploy import LiteUnavailable, find_lite_python
    try:
        return find_lite_python()
    except LiteUnavailable as e:
        # the tests never look into ~/.cache (conftest.py): the interpreter comes from the variable
        e = f"{e}\n(tests find Lite only through PPMOBILENET_LITE_PYTHON; tools/test.sh sets it to " \
            f"the interpreter `python tools/provision_lite.py` prints)"
        if os.environ.get("PPMOBILENET_REQUIRE_LITE") == "1":
            pytest.fail(f"PPMOBILENET_REQUIRE_LITE=1 but Paddle Lite is unavailable: {e}")
        pytest.skip(f"Paddle Lite unavailable: {e}")


def onnx_or_skip():
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError as e:
        if os.environ.get("PPMOBILENET_REQUIRE_ONNX") == "1":
            pytest.fail(f"PPMOBILENET_REQUIRE_ONNX=1 but paddle2onnx/onnxruntime is missing: {e}")
        pytest.skip(f"paddle2onnx / onnxruntime not installed: {e}")


def make_weights(path, name="mobilenet_v1", class_num=10, scale=0.25, head="classic", seed=0,
                 sharpen=30.0):
    """A real .pdparams. Fresh weights give a near-uniform softmax, where a 1e-4 check would
    prove little; multiplying the classifier by `sharpen` spreads the probabilities."""
    import paddle
    from ppmobilenet.models import build_model
    paddle.seed(seed)
    kwargs = {"class_dim": class_num, "scale": scale}
    if name == "mobilenet_v1":
        kwargs["head"] = head
    model = build_model(name, **kwargs)
    state = model.state_dict()
    state["fc.weight"] = state["fc.weight"] * sharpen
    paddle.save(state, path)
    return path


def write_labels(path, n=10):
    with open(path, "w") as f:
        f.writelines(f"{i} {DIGIT_NAMES[i % 10]}\n" for i in range(n))
    return path


def make_digit_images(folder, count=6):
    """Real handwritten digits (scikit-learn's) as PNGs of several modes and sizes:
    RGB, grayscale (L), RGBA, palette (P), and odd sizes that Resize + CenterCrop handle."""
    from PIL import Image
    from sklearn.datasets import load_digits
    os.makedirs(folder, exist_ok=True)
    digits = load_digits()
    modes = ["RGB", "L", "RGBA", "P", "RGB", "L"]
    sizes = [(64, 64), (80, 72), (64, 96), (70, 70), (100, 64), (64, 64)]
    paths = []
    for i in range(count):
        idx = int(np.nonzero(digits.target == i % 10)[0][0])
        gray = Image.fromarray((digits.images[idx] * (255.0 / 16.0)).astype(np.uint8), "L")
        img = gray.resize(sizes[i % len(sizes)], Image.BILINEAR).convert("RGB")
        mode = modes[i % len(modes)]
        if mode == "RGBA":
            img = img.convert("RGBA")
        elif mode == "P":
            img = img.convert("P", palette=Image.ADAPTIVE)
        elif mode == "L":
            img = img.convert("L")
        path = os.path.join(folder, f"digit_{i}_{mode}.png")
        img.save(path)
        paths.append(path)
    return paths


def load_cfg(*overrides):
    from ppmobilenet.config import load_config
    return load_config(DEMO, [EVAL_TRANSFORMS, *overrides])


def export_overrides(tmp, weights, labels, extra=()):
    return [EVAL_TRANSFORMS, f"Global.pretrained_model={weights}",
            f"Global.save_inference_dir={os.path.join(tmp, 'inference')}",
            f"Infer.class_id_map_file={labels}", *extra]


def run_tool(tool, *args, timeout=600, env=None):
    """Run tools/<tool>.py in a fresh interpreter -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def o_args(overrides):
    out = []
    for o in overrides:
        out += ["-o", o]
    return out


_CACHE = {}


def shared_export(tmp_path_factory):
    """One export (V1 x0.25 classic, 10 classes, sharpened weights, labels, lite arm+x86 when
    Lite is available, ONNX when installed) shared by the test modules of one run."""
    if "export" in _CACHE:
        return _CACHE["export"]
    from ppmobilenet.deploy.export import export_model
    from ppmobilenet.deploy.errors import LiteUnavailable
    tmp = str(tmp_path_factory.mktemp("shared_export"))
    weights = make_weights(os.path.join(tmp, "w.pdparams"))
    labels = write_labels(os.path.join(tmp, "labels_src.txt"))
    images = make_digit_images(os.path.join(tmp, "images"))
    cfg = load_cfg(*export_overrides(tmp, weights, labels)[1:])
    targets = ["arm", "x86"]
    try:
        from ppmobilenet.deploy import find_lite_python
        find_lite_python()
    except LiteUnavailable:
        targets = []
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
        onnx = True
    except ImportError:
        onnx = False
    logs = []
    report = export_model(cfg, lite_targets=targets, onnx=onnx, log=logs.append)
    _CACHE["export"] = {"tmp": tmp, "dir": report["save_dir"], "cfg": cfg, "weights": weights,
                        "labels": labels, "images": images, "report": report, "log": logs,
                        "lite": bool(targets), "onnx": onnx}
    return _CACHE["export"]
