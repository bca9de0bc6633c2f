"""Every published MobileNet weight layout loads through Global.pretrained_model and reproduces
its source: PaddleClas's and paddle.vision's .pdparams, torchvision's .pth (read without torch).

Each source's own model code builds the reference (tests/ecosystem_refs.py), every tensor filled
with random values (BN statistics too), saved in the source's own format (paddle.save,
torch.save); ppmobilenet's model, built from a config, loads the file and must give the
source's eval-mode logits within 1e-5 relative. Wrong lineage / network / width / an unknown
layout give the errors that say what to set."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ecosystem_refs import (fill_paddle, fill_torch, paddleclas_model, relative_error,
                            torchvision_models)
from ppmobilenet.config import load_config
from ppmobilenet.models import build_model_from_arch
from ppmobilenet.weights import WeightsError, load_pretrained, load_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
CONFIGS = {"mobilenet_v1": "MobileNetV1_x1_0.yaml", "mobilenet_v2": "MobileNetV2_x1_0.yaml",
           "mobilenet_v3_small": "MobileNetV3_small_x1_0.yaml",
           "mobilenet_v3_large": "MobileNetV3_large_x1_0.yaml"}
X = np.random.RandomState(1).normal(0.0, 1.0, (2, 3, 64, 64)).astype(np.float32)


def scale_tag(scale):
    return str(scale).replace(".", "_")


# ------------------------------------------------------------------ the sources, their files

def paddleclas(name, scale, seed=0):
    """PaddleClas's model for (Arch.name, scale) -> (model, the name of its published file)."""
    if name == "mobilenet_v1":
        factory = "MobileNetV1" if scale == 1.0 else f"MobileNetV1_x{scale_tag(scale)}"
        module = "legendary_models.mobilenet_v1"
    elif name == "mobilenet_v2":
        factory = "MobileNetV2" if scale == 1.0 else f"MobileNetV2_x{scale_tag(scale)}"
        module = "model_zoo.mobilenet_v2"
    else:
        factory = f"MobileNetV3_{name.split('_')[-1]}_x{scale_tag(scale)}"
        module = "legendary_models.mobilenet_v3"
    return fill_paddle(paddleclas_model(module, factory), seed), factory


def paddle_vision(name, scale, seed=0):
    import paddle.vision.models as pv
    return fill_paddle(getattr(pv, name)(scale=scale), seed), f"{name}_x{scale}"


def torchvision(name, scale, seed=0):
    tv2, tv3 = torchvision_models()
    module = tv2 if name == "mobilenet_v2" else tv3
    return fill_torch(getattr(module, name)(width_mult=scale), seed), f"{name}_x{scale}"


def source_logits(model, x=X):
    if isinstance(model, paddle.nn.Layer):
        with paddle.no_grad():
            return model(paddle.to_tensor(x)).numpy()
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def save(model, folder, stem, legacy_torch=False):
    """The source's own format: paddle.save -> .pdparams, torch.save -> .pth."""
    if isinstance(model, paddle.nn.Layer):
        path = os.path.join(folder, stem + ".pdparams")
        paddle.save(model.state_dict(), path)
        return path
    import torch
    path = os.path.join(folder, stem + ".pth")
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy_torch)
    return path


def config(name, scale, weights, variant=None, class_num=1000, extra=()):
    overrides = [f"Arch.name={name}", f"Arch.scale={scale}", f"Arch.class_num={class_num}",
                 f"Global.pretrained_model={weights}"]
    if name == "mobilenet_v1":
        overrides.append("Arch.head=classic")
    elif variant:
        overrides.append(f"Arch.variant={variant}")
    return load_config(os.path.join(ROOT, "configs", CONFIGS[name]), [*overrides, *extra])


def ours_from_config(cfg):
    """The model a command builds from the config, with Global.pretrained_model loaded the way
    export and infer load it (the classifier must fit)."""
    model = build_model_from_arch(cfg["Arch"])
    load_weights(model, cfg["Global"]["pretrained_model"])
    model.eval()
    return model


# Every published PaddleClas file (MobileNetV1 x0.25-x1.0, V2 x0.25-x2.0, V3 every scale), and
# two widths of each paddle.vision / torchvision model (they publish x1.0).
PADDLECLAS = ([("mobilenet_v1", s) for s in (0.25, 0.5, 0.75, 1.0)]
              + [("mobilenet_v2", s) for s in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)]
              + [(f"mobilenet_v3_{size}", s) for size in ("small", "large")
                 for s in (0.35, 0.5, 0.75, 1.0, 1.25)])
PADDLE_VISION = [(n, s) for n in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small",
                                  "mobilenet_v3_large") for s in (0.5, 1.0)]
TORCHVISION = [(n, s) for n in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
               for s in (0.75, 1.0)]


CASES = ([("paddleclas", n, s) for n, s in PADDLECLAS] + [("paddle_vision", n, s) for n, s in PADDLE_VISION]
         + [("torchvision", n, s) for n, s in TORCHVISION])


@pytest.mark.parametrize("source, name, scale", CASES)
def test_published_file_reproduces_its_source(tmp_path, source, name, scale):
    ref, stem = globals()[source](name, scale)
    # PaddleClas's distilled files carry the same names: half its cases use the _ssld file name
    if source == "paddleclas":
        stem += "_ssld_pretrained" if int(scale * 100) % 2 else "_pretrained"
    variant = None if source == "paddleclas" else "torchvision"
    cfg = config(name, scale, save(ref, str(tmp_path), stem), variant)
    err = relative_error(source_logits(ours_from_config(cfg)), source_logits(ref))
    assert err <= TOL, f"{source} {stem}: {err:.2e}"


def test_torchvision_legacy_format_pth_loads(tmp_path):
    """torchvision's first mobilenet_v2 file predates torch's zip format."""
    ref, stem = torchvision("mobilenet_v2", 1.0, seed=3)
    path = save(ref, str(tmp_path), stem, legacy_torch=True)
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # not a zip
    err = relative_error(source_logits(ours_from_config(config("mobilenet_v2", 1.0, path, "torchvision"))),
                         source_logits(ref))
    assert err <= TOL


# each source and each network at least once (an export costs half a minute here; the loader
# test above covers every file)
@pytest.mark.parametrize("source, name, scale, variant", [
    ("paddleclas", "mobilenet_v1", 0.5, None),
    pytest.param("paddleclas", "mobilenet_v2", 1.0, None, marks=pytest.mark.slow),
    ("paddleclas", "mobilenet_v3_large", 0.75, None),
    ("paddle_vision", "mobilenet_v3_small", 1.0, "torchvision"),
    pytest.param("torchvision", "mobilenet_v2", 1.0, "torchvision", marks=pytest.mark.slow),
    pytest.param("torchvision", "mobilenet_v3_large", 1.0, "torchvision", marks=pytest.mark.slow)])
def test_exported_model_reproduces_the_source(tmp_path, source, name, scale, variant):
    """The whole path: config + Global.pretrained_model -> tools/export's export_model ->
    Paddle Inference (inference.json), against the source's own eval-mode logits."""
    from ppmobilenet.deploy.export import export_model
    from ppmobilenet.deploy.predictors import PaddlePredictor
    ref, stem = globals()[source](name, scale, seed=5)
    weights = save(ref, str(tmp_path), stem)
    out = str(tmp_path / "inference")
    cfg = config(name, scale, weights, variant, extra=[
        f"Global.save_inference_dir={out}", "Global.image_shape=[3, 64, 64]", "Export.softmax=false"])
    export_model(cfg, lite_targets=[], onnx=False, log=lambda m: None)
    got = PaddlePredictor(out).predict(X)  # as tools/infer.py runs it (oneDNN)
    err = relative_error(got, source_logits(ref))
    assert err <= TOL, f"{source} {stem} exported: {err:.2e}"


# ------------------------------------------------------------------ fine-tuning, errors

def test_finetune_to_other_classes_drops_only_the_classifier(tmp_path):
    """Global.pretrained_model for training: another class count keeps every other tensor
    (the 960 -> 1280 layer before the classifier too) and says so in one line."""
    ref, stem = torchvision("mobilenet_v3_large", 1.0)
    cfg = config("mobilenet_v3_large", 1.0, save(ref, str(tmp_path), stem), "torchvision", class_num=7)
    model = build_model_from_arch(cfg["Arch"])
    rep = load_pretrained(model, cfg["Global"]["pretrained_model"])
    assert rep["skipped"] == ["fc.bias", "fc.weight"]
    assert "classifier NOT loaded (class count differs)" in rep["message"]
    assert len(rep["message"].splitlines()) == 1
    np.testing.assert_array_equal(model.pre_fc.weight.numpy(),
                                  ref.classifier[0].weight.detach().numpy().T)
    np.testing.assert_array_equal(model.blocks[14].se.reduce.weight.numpy(),
                                  ref.features[15].block[2].fc1.weight.detach().numpy())
    assert model.fc.weight.shape == [1280, 7]


def _load_error(name, scale, weights, variant=None, head="classic"):
    overrides = [] if head == "classic" else [f"Arch.head={head}"]
    cfg = config(name, scale, weights, variant, extra=overrides)
    model = build_model_from_arch(cfg["Arch"])
    with pytest.raises(WeightsError) as e:
        load_weights(model, cfg["Global"]["pretrained_model"])
    return str(e.value)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("published"))
    return {
        "tv_v3_large": save(torchvision("mobilenet_v3_large", 1.0)[0], folder, "tv_v3_large"),
        "pc_v3_small": save(paddleclas("mobilenet_v3_small", 1.0)[0], folder, "pc_v3_small"),
        "pc_v3_small_x0_5": save(paddleclas("mobilenet_v3_small", 0.5)[0], folder, "pc_v3_small_x0_5"),
        "pc_v2": save(paddleclas("mobilenet_v2", 1.0)[0], folder, "pc_v2"),
        "pc_v1": save(paddleclas("mobilenet_v1", 0.5)[0], folder, "pc_v1"),
        "pv_v2": save(paddle_vision("mobilenet_v2", 1.0)[0], folder, "pv_v2"),
    }


def test_other_lineage_names_the_variant_to_set(files):
    msg = _load_error("mobilenet_v3_large", 1.0, files["tv_v3_large"], "paddle")
    assert "torchvision mobilenet_v3 weights (torchvision lineage)" in msg
    assert "set -o Arch.variant=torchvision" in msg and files["tv_v3_large"] in msg
    msg = _load_error("mobilenet_v3_small", 1.0, files["pc_v3_small"], "torchvision")
    assert "PaddleClas mobilenet_v3" in msg and "set -o Arch.variant=paddle" in msg
    msg = _load_error("mobilenet_v2", 1.0, files["pv_v2"], "paddle")
    assert "paddle.vision mobilenet_v2" in msg and "set -o Arch.variant=torchvision" in msg


def test_other_network_width_or_head_names_what_to_set(files):
    assert "set -o Arch.name=mobilenet_v3_small" in _load_error("mobilenet_v3_large", 1.0, files["pc_v3_small"])
    assert "set -o Arch.name=mobilenet_v2" in _load_error("mobilenet_v3_small", 1.0, files["pc_v2"])
    msg = _load_error("mobilenet_v3_small", 1.0, files["pc_v3_small_x0_5"])
    assert "PaddleClas mobilenet_v3 x0.5 weights" in msg and "set -o Arch.scale=0.5" in msg
    assert "set -o Arch.head=classic" in _load_error("mobilenet_v1", 0.5, files["pc_v1"], head="demo")


def test_unknown_layout_names_the_closest_and_a_few_mismatches(tmp_path, files):
    from ppmobilenet.weights.torch_file import read_torch_state
    state = read_torch_state(files["tv_v3_large"])
    # a training script's checkpoint: its own prefix on every name, one tensor renamed
    odd = {("backbone." + k if k.startswith("features.") else k): v for k, v in state.items()}
    odd["head.weight"] = odd.pop("classifier.3.weight")
    path = str(tmp_path / "odd.pdparams")
    paddle.save(odd, path)
    msg = _load_error("mobilenet_v3_large", 1.0, path, "torchvision")
    lines = msg.splitlines()
    assert "no layout known for mobilenet_v3_large" in lines[0]
    assert "the closest is torchvision mobilenet_v3" in lines[0]
    assert lines[1].startswith("  missing: classifier.3.weight, features.0.0.weight")
    assert lines[2].startswith("  unexpected: backbone.features.0.0.weight") and "more)" in lines[2]
    assert len(lines) == 3 and len(msg) < 600


def test_pth_is_read_without_torch(tmp_path, files):
    """A subprocess where `import torch` fails loads the .pth and matches the arrays."""
    from ppmobilenet.weights.torch_file import read_torch_state
    expected = read_torch_state(files["tv_v3_large"])
    out = str(tmp_path / "arrays.npz")
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from ppmobilenet.weights.torch_file import read_torch_state\n"
            f"state = read_torch_state({files['tv_v3_large']!r})\n"
            f"np.savez({out!r}, **{{k.replace('.', '/'): v for k, v in state.items()}})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(out)
    assert len(got.files) == len(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k.replace(".", "/")], v)


class _Payload:
    """Pickles to a call of os.system: what a hostile .pth carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pth_that_would_run_code_is_refused(tmp_path):
    import torch
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pth")
    torch.save({"features.0.0.weight": torch.zeros(2), "x": _Payload(marker)}, path)
    cfg = config("mobilenet_v3_small", 1.0, path, "torchvision")
    model = build_model_from_arch(cfg["Arch"])
    with pytest.raises(WeightsError, match=r"refused to open: the pickle asks for (posix|os)\.system"):
        load_weights(model, path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "storage"])
def test_damaged_pth_is_named(tmp_path, files, damage):
    import zipfile
    path = str(tmp_path / "bad.pth")
    data = open(files["tv_v3_large"], "rb").read()
    if damage == "truncate":
        open(path, "wb").write(data[: len(data) // 2])
    else:  # a storage record gone
        with zipfile.ZipFile(files["tv_v3_large"]) as src, zipfile.ZipFile(path, "w") as dst:
            for info in src.infolist():
                if not info.filename.endswith("/data/0"):
                    dst.writestr(info, src.read(info))
    cfg = config("mobilenet_v3_large", 1.0, path, "torchvision")
    with pytest.raises(WeightsError) as e:
        load_weights(build_model_from_arch(cfg["Arch"]), path)
    assert path in str(e.value)
    assert ("truncated or not a torch weights file" if damage == "truncate" else "data/0 is missing") in str(e.value)


# ------------------------------------------------------------------ tools/convert_weights.py

CONVERT = os.path.join(ROOT, "tools", "convert_weights.py")


def convert(*args):
    return subprocess.run([sys.executable, CONVERT, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("source, name, scale", [
    ("torchvision", "mobilenet_v3_small", 1.0), ("torchvision", "mobilenet_v2", 1.0),
    ("paddleclas", "mobilenet_v3_large", 0.5), ("paddle_vision", "mobilenet_v1", 0.5)])
def test_converted_file_reproduces_its_source(tmp_path, source, name, scale):
    """A published file (the source's own model, random-filled, saved in its own format) ->
    tools/convert_weights.py -> .safetensors in our names, with the Arch and variant in its
    metadata -> Global.pretrained_model: the source's eval logits within 1e-5."""
    from ppmobilenet.weights import arch_from_metadata, read_metadata
    ref, stem = globals()[source](name, scale, seed=7)
    weights = save(ref, str(tmp_path), stem)
    variant = "torchvision" if source != "paddleclas" and name != "mobilenet_v1" else None
    extra = ["-o", f"Arch.variant={variant}"] if variant else []
    extra += ["-o", "Arch.head=classic"] if name == "mobilenet_v1" else []
    r = convert(weights, "-c", os.path.join(ROOT, "configs", CONFIGS[name]), "-o", f"Arch.scale={scale}", *extra)
    assert r.returncode == 0, r.stderr
    out = str(tmp_path / (stem + ".safetensors"))
    assert f"wrote {out}" in r.stdout
    meta = read_metadata(out)
    want = {"name": name, "scale": scale, "class_num": 1000}
    want.update({"variant": variant or "paddle"} if name != "mobilenet_v1" else {"head": "classic"})
    assert arch_from_metadata(meta) == want
    assert meta["source"] == os.path.basename(weights)
    # the metadata alone rebuilds the network: no config needed to use the file
    model = build_model_from_arch(arch_from_metadata(meta))
    load_weights(model, out)
    model.eval()
    err = relative_error(source_logits(model), source_logits(ref))
    assert err <= TOL, f"{source} {stem} converted: {err:.2e}"
    err = relative_error(source_logits(ours_from_config(config(name, scale, out, variant))), source_logits(ref))
    assert err <= TOL, f"{source} {stem} converted, through the config: {err:.2e}"


def test_convert_names_the_variant_and_the_converted_file_keeps_it(tmp_path, files):
    """Converting torchvision weights with the default (paddle) variant is refused with the -o
    to set; a converted torchvision V2 file loaded into a paddle-variant config says the same
    (the tensors are in our names then: the metadata tells), and so does another width."""
    v3 = os.path.join(ROOT, "configs", CONFIGS["mobilenet_v3_large"])
    r = convert(files["tv_v3_large"], "-c", v3, "--out", tmp_path / "x.safetensors")
    assert r.returncode == 1 and "set -o Arch.variant=torchvision" in r.stderr, r.stderr
    assert files["tv_v3_large"] in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.safetensors").exists()

    ref, stem = torchvision("mobilenet_v2", 0.75, seed=2)
    weights = save(ref, str(tmp_path), stem)
    out = tmp_path / "v2.safetensors"
    r = convert(weights, "-c", os.path.join(ROOT, "configs", CONFIGS["mobilenet_v2"]),
                "-o", "Arch.variant=torchvision", "Arch.scale=0.75", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "mobilenet_v2 x0.75, variant torchvision, 1000 classes" in r.stdout
    msg = _load_error("mobilenet_v2", 0.75, str(out), "paddle")
    assert f"Global.pretrained_model={out}" in msg and "set -o Arch.variant=torchvision" in msg
    msg = _load_error("mobilenet_v2", 1.0, str(out), "torchvision")
    assert "set -o Arch.scale=0.75" in msg and "variant" not in msg.split("set")[-1]
