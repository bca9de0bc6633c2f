"""The port against the original graphs: the seed's MobileNet.net (and the released fluid V1 / V2)
built with paddle.static.nn in a subprocess, their weights written by Paddle's own save_vars."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppmobilenet.models import (MobileNet, MobileNetV1, MobileNetV2, load_fluid_params,
                                read_fluid_tensor)

SEED_SPECS = [{"graph": "seed", "scale": s, "class_dim": c} for s in (0.25, 0.5, 1.0) for c in (10, 1000)]
RELEASED_SPECS = [{"graph": "released_v1", "scale": 0.5, "class_dim": 10},
                  {"graph": "released_v1", "scale": 1.0, "class_dim": 1000},
                  {"graph": "released_v2", "scale": 1.0, "class_dim": 1000},
                  {"graph": "released_v2", "scale": 0.5, "class_dim": 10}]
SPECS = SEED_SPECS + RELEASED_SPECS


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Builds every reference graph once; returns {spec index: output folder}."""
    root = tmp_path_factory.mktemp("fluid_reference")
    spec_file = root / "spec.json"
    spec_file.write_text(json.dumps(SPECS))
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    script = os.path.join(os.path.dirname(__file__), "fluid_reference.py")
    proc = subprocess.run([sys.executable, script, str(spec_file), str(root / "out")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {i: root / "out" / str(i) for i in range(len(SPECS))}


def build_ours(spec):
    if spec["graph"] == "seed":
        return MobileNetV1(class_dim=spec["class_dim"], scale=spec["scale"], head="demo")
    if spec["graph"] == "released_v1":
        return MobileNetV1(class_dim=spec["class_dim"], scale=spec["scale"], head="classic")
    return MobileNetV2(class_dim=spec["class_dim"], scale=spec["scale"])


def run(model, x, train):
    model.train() if train else model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def assert_close(ours, theirs, what):
    """Equal within 1e-5 relative to the output's scale."""
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert err <= 1e-5, f"{what}: max relative difference {err:.2e}"


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("index", range(len(SPECS)),
                         ids=[f"{s['graph']}-x{s['scale']}-{s['class_dim']}" for s in SPECS])
def test_same_tensors_in_the_same_order(reference, index):
    params = json.loads((reference[index] / "params.json").read_text())
    ours = [(k, list(v.shape)) for k, v in build_ours(SPECS[index]).state_dict().items()]
    assert [shape for _, shape in ours] == [shape for _, shape in params]
    assert len(ours) == len(params)


@pytest.mark.parametrize("index", range(len(SEED_SPECS)),
                         ids=[f"x{s['scale']}-{s['class_dim']}" for s in SEED_SPECS])
def test_seed_outputs_equal_with_the_same_weights(reference, index):
    """Weights copied position by position (the seed's creation order), then eval and train."""
    folder, spec = reference[index], SEED_SPECS[index]
    params = json.loads((folder / "params.json").read_text())
    io = np.load(folder / "io.npz")
    model = build_ours(spec)
    keys = list(model.state_dict())
    model.set_state_dict({key: read_fluid_tensor(folder / "weights" / name)
                          for key, (name, _) in zip(keys, params)})
    assert_close(run(model, io["x"], train=False), io["eval_logits"], "eval logits")
    # The facade returns the seed's softmax output.
    facade = MobileNet()
    facade.model = model
    probs = facade.net(paddle.to_tensor(io["x"]), spec["class_dim"], spec["scale"]).numpy()
    np.testing.assert_allclose(probs, io["eval_out"], rtol=1e-4, atol=1e-6)
    # Last: a train-mode step also moves the running statistics.
    assert_close(run(model, io["x"], train=True), io["train_logits"], "train-mode logits")


@pytest.mark.parametrize("index", range(len(SPECS)),
                         ids=[f"{s['graph']}-x{s['scale']}-{s['class_dim']}" for s in SPECS])
def test_load_fluid_params_from_save_vars_directory(reference, index):
    """Paddle's own one-file-per-variable writer, read by our loader, gives the same outputs."""
    folder, spec = reference[index], SPECS[index]
    io = np.load(folder / "io.npz")
    model = build_ours(spec)
    report = load_fluid_params(model, str(folder / "weights"))
    assert report["scheme"] == {"seed": "demo"}.get(spec["graph"], spec["graph"].replace("released_", "mobilenet_"))
    assert len(report["loaded"]) == len(model.state_dict())
    assert_close(run(model, io["x"], train=False), io["eval_logits"], "eval logits")
    assert_close(run(model, io["x"], train=True), io["train_logits"], "train-mode logits")


def _init_kind(values):
    """'uniform' or 'normal' from the kurtosis (1.8 vs 3), plus the std."""
    v = values.ravel().astype(np.float64)
    kurtosis = ((v - v.mean()) ** 4).mean() / v.var() ** 2
    return ("uniform" if kurtosis < 2.4 else "normal"), v.std()


@pytest.mark.parametrize("index", [1, 5], ids=["x0.25-1000", "x1.0-1000"])
def test_initialisers_follow_the_seed(reference, index):
    """Fresh weights: the same distribution family and spread as fluid gave the seed graph
    (MSRA uniform on the conv_bn convs and the fc, fluid's conv2d default on the class conv,
    BN scale 1 / offset 0 / mean 0 / variance 1)."""
    folder = reference[index]
    params = json.loads((folder / "params.json").read_text())
    init = np.load(folder / "init.npz")
    model = build_ours(SEED_SPECS[index])
    for (key, ours), (name, _) in zip(model.state_dict().items(), params):
        theirs, ours = init[name], ours.numpy()
        if theirs.size < 2000 or np.all(theirs == theirs.flat[0]):
            if np.all(theirs == theirs.flat[0]):
                assert np.all(ours == theirs.flat[0]), key
            continue
        kind_t, std_t = _init_kind(theirs)
        kind_o, std_o = _init_kind(ours)
        assert kind_o == kind_t, f"{key}: {kind_o} init, the seed's {name} is {kind_t}"
        assert abs(std_o / std_t - 1) < 0.1, f"{key}: std {std_o:.4g}, the seed's {std_t:.4g}"
