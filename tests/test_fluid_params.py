"""load_fluid_params on directories written by Paddle's own save_vars, good and damaged."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppmobilenet.models import MobileNetV1, MobileNetV2
from ppmobilenet.weights import FluidParamsError, fluid_name_map, load_fluid_params, read_fluid_tensor


@pytest.fixture(scope="module")
def seed_weights(tmp_path_factory):
    """The seed graph (x0.25, 10 classes) saved by paddle.static.save_vars: the demo's auto names."""
    root = tmp_path_factory.mktemp("seed_weights")
    (root / "spec.json").write_text(json.dumps([{"graph": "seed", "scale": 0.25, "class_dim": 10}]))
    script = os.path.join(os.path.dirname(__file__), "fluid_reference.py")
    proc = subprocess.run([sys.executable, script, str(root / "spec.json"), str(root / "out")],
                          env=dict(os.environ, FLAGS_enable_pir_api="0"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out" / "0" / "weights"


@pytest.fixture
def weights(seed_weights, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(seed_weights, tmp_path / "weights")


def seed_model(class_dim=10):
    return MobileNetV1(class_dim=class_dim, scale=0.25, head="demo")


def error_of(model, source, **kwargs):
    with pytest.raises(FluidParamsError) as info:
        load_fluid_params(model, str(source), **kwargs)
    return str(info.value)


def test_loads_every_tensor(weights):
    model = seed_model()
    report = load_fluid_params(model, str(weights))
    assert report["scheme"] == "demo"
    assert len(report["loaded"]) == 139 and report["skipped"] == []
    np.testing.assert_array_equal(model.fc.weight.numpy(), read_fluid_tensor(weights / "fc_0.w_0"))
    np.testing.assert_array_equal(model.blocks[3].pointwise.bn._variance.numpy(),
                                  read_fluid_tensor(weights / "batch_norm_8.w_2"))


def test_missing_tensor_is_named(weights):
    os.remove(weights / "batch_norm_3.w_1")
    message = error_of(seed_model(), weights)
    assert "missing: batch_norm_3.w_1" in message


def test_extra_tensors_are_named(weights):
    shutil.copy(weights / "conv2d_1.w_0", weights / "conv2d_28.w_0")
    shutil.copy(weights / "fc_0.b_0", weights / "my_head.b_0")
    message = error_of(seed_model(), weights)
    assert "unexpected: conv2d_28.w_0, my_head.b_0" in message


def test_wrong_shape_is_named(weights):
    shutil.copy(weights / "conv2d_1.w_0", weights / "conv2d_2.w_0")
    message = error_of(seed_model(), weights)
    assert "mis-shaped: conv2d_2.w_0 [8, 1, 3, 3] (expected [16, 8, 1, 1] for blocks.0.pointwise.conv.weight)" in message


def test_every_problem_in_one_error(weights):
    os.remove(weights / "fc_0.b_0")
    shutil.copy(weights / "conv2d_1.w_0", weights / "conv2d_2.w_0")
    shutil.copy(weights / "fc_0.w_0", weights / "extra")
    message = error_of(seed_model(), weights)
    assert "missing: fc_0.b_0" in message and "unexpected: extra" in message
    assert "mis-shaped: conv2d_2.w_0" in message


def test_nothing_is_loaded_when_the_error_is_raised(weights):
    os.remove(weights / "fc_0.b_0")
    model = seed_model()
    before = model.fc.weight.numpy().copy()
    error_of(model, weights)
    np.testing.assert_array_equal(model.fc.weight.numpy(), before)


def test_truncated_file_is_named(weights):
    path = weights / "conv2d_5.w_0"
    path.write_bytes(path.read_bytes()[:-10])
    message = error_of(seed_model(), weights)
    assert str(path) in message and "truncated" in message


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\x00" * 12 + b"\xff" * 50])
def test_foreign_file_is_named(weights, content):
    path = weights / "conv2d_5.w_0"
    path.write_bytes(content)
    message = error_of(seed_model(), weights)
    assert str(path) in message


def test_skip_classifier_for_another_class_count(weights):
    model = seed_model(class_dim=1000)
    report = load_fluid_params(model, str(weights), skip_classifier=True)
    assert report["skipped"] == ["conv2d_27.w_0", "conv2d_27.b_0", "fc_0.w_0", "fc_0.b_0"]
    np.testing.assert_array_equal(model.conv1.conv.weight.numpy(),
                                  read_fluid_tensor(weights / "conv2d_0.w_0"))
    message = error_of(seed_model(class_dim=1000), weights)
    assert "mis-shaped: fc_0.w_0 [10, 10]" in message


def test_optimizer_state_from_save_persistables_is_ignored(weights):
    shutil.copy(weights / "conv2d_0.w_0", weights / "conv2d_0.w_0_velocity_0")
    shutil.copy(weights / "fc_0.b_0", weights / "learning_rate_0")
    report = load_fluid_params(seed_model(), str(weights))
    assert report["ignored"] == ["conv2d_0.w_0_velocity_0", "learning_rate_0"]


def test_auto_names_numbered_from_a_later_start(weights):
    """fluid's name counters are per process: a program that built layers first starts later."""
    mapping = {}
    for name in os.listdir(weights):
        family, rest = name.split(".", 1)
        prefix, number = family.rsplit("_", 1)
        mapping[f"{prefix}_{int(number) + 3}.{rest}"] = read_fluid_tensor(weights / name)
    model = seed_model()
    assert load_fluid_params(model, mapping)["scheme"] == "demo"
    np.testing.assert_array_equal(model.fc.bias.numpy(), mapping["fc_3.b_0"])


def test_mapping_source_and_scheme_mismatch():
    mapping = {k: v.numpy() for k, v in MobileNetV2(class_dim=10, scale=0.5).state_dict().items()}
    with pytest.raises(FluidParamsError, match="cannot tell the naming scheme"):
        load_fluid_params(seed_model(), mapping)
    with pytest.raises(FluidParamsError, match="released mobilenet_v1 scheme cannot load into a MobileNetV2"):
        load_fluid_params(MobileNetV2(), {"conv1_weights": np.zeros([32, 3, 3, 3], "float32")})


def test_released_v1_names_into_the_demo_head_are_refused():
    classic = MobileNetV1(class_dim=10, scale=0.25, head="classic")
    names = {name: classic.state_dict()[key].numpy()
             for key, name in fluid_name_map(classic, "mobilenet_v1")}
    assert len(names) == 137
    with pytest.raises(FluidParamsError, match="build MobileNetV1\\(head='classic'\\)"):
        load_fluid_params(seed_model(), names)
    load_fluid_params(MobileNetV1(class_dim=10, scale=0.25, head="classic"), names)


def test_not_a_directory(tmp_path):
    with pytest.raises(FluidParamsError, match="not a directory of fluid weights"):
        load_fluid_params(seed_model(), str(tmp_path / "nope"))


def test_the_models_package_keeps_its_fluid_exports():
    """`from ppmobilenet.models import load_fluid_params, ...` is a documented contract."""
    from ppmobilenet import models
    assert (models.load_fluid_params, models.read_fluid_tensor, models.FluidParamsError) == \
        (load_fluid_params, read_fluid_tensor, FluidParamsError)


def test_float64_tensor_is_cast(weights):
    """A fluid file of another float type loads, cast to the layer's dtype."""
    model = seed_model()
    mapping = {name: read_fluid_tensor(weights / name).astype("float64") for name in os.listdir(weights)}
    load_fluid_params(model, mapping)
    assert model.fc.weight.dtype == paddle.float32
