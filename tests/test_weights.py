"""The one strict loader (ppmobilenet.weights.strict) on real models: a layout maps a file's own
names onto the model's, every problem is named in the file's names, long lists are summarised,
and nothing is loaded when anything does not fit."""
import numpy as np
import paddle
import pytest

from ppmobilenet.models import build_model_from_arch
from ppmobilenet.weights import WeightsError, load_state, load_strict

ARCH = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}


def net(seed=0, **arch):
    paddle.seed(seed)
    return build_model_from_arch(dict(ARCH, **arch))


def arrays(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_a_layout_loads_a_file_with_other_names():
    src = arrays(net(seed=1))
    renamed = {f"backbone/{k.replace('.', '/')}": v for k, v in src.items()}
    layout = {name: name[len("backbone/"):].replace("/", ".") for name in renamed}
    model = net(seed=2)
    loaded = load_strict(model, renamed, "header", layout=layout)
    assert loaded == list(src)
    got = arrays(model)
    assert all(np.array_equal(got[k], src[k]) for k in src)


def test_problems_are_named_in_the_files_names_and_nothing_loads():
    src = arrays(net(seed=1))
    renamed = {f"b/{k}": v for k, v in src.items()}
    layout = {name: name[2:] for name in renamed}
    del renamed["b/fc.bias"]
    renamed["b/conv1.conv.weight"] = np.zeros([3, 3, 3, 3], "float32")
    renamed["stray"] = np.zeros([1], "float32")
    model = net(seed=2)
    before = arrays(model)
    with pytest.raises(WeightsError) as e:
        load_strict(model, renamed, "w.bin does not fit:", layout=layout)
    msg = str(e.value)
    assert msg.startswith("w.bin does not fit:")
    assert "missing: b/fc.bias" in msg and "unexpected: stray" in msg
    assert "mis-shaped: b/conv1.conv.weight [3, 3, 3, 3] (expected [8, 3, 3, 3] for conv1.conv.weight)" in msg
    after = arrays(model)
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_weights_of_another_network_are_summarised():
    other = arrays(build_model_from_arch({"name": "mobilenet_v2", "class_num": 10, "scale": 0.25}))
    other = {f"x.{k}": v for k, v in other.items()}           # no name in common
    with pytest.raises(WeightsError) as e:
        load_strict(net(), other, "h")
    msg = str(e.value)
    assert "none of the file's 267 tensor names is one the model has" in msg
    missing = next(ln for ln in msg.splitlines() if ln.strip().startswith("missing:"))
    assert missing.endswith(f"... and {137 - 20} more")


def test_classifier_of_another_class_count_is_left_fresh_only_when_asked():
    src = arrays(net(seed=1))
    model = net(seed=2, class_num=4)
    fresh_fc = model.fc.weight.numpy().copy()
    with pytest.raises(WeightsError, match=r"mis-shaped: fc\.weight \[256, 10\] \(model: \[256, 4\]\)"):
        load_state(model, src, "s", "pdparams", "h")
    rep = load_state(model, src, "s", "pdparams", "h", skip_classifier_on_mismatch=True)
    assert rep["skipped"] == ["fc.bias", "fc.weight"] and rep["loaded"] == len(src) - 2
    assert np.array_equal(model.fc.weight.numpy(), fresh_fc)
    assert np.array_equal(model.conv1.conv.weight.numpy(), src["conv1.conv.weight"])


def test_float64_arrays_are_cast_to_the_models_dtype():
    src = {k: v.astype("float64") for k, v in arrays(net(seed=1)).items()}
    model = net(seed=2)
    load_strict(model, src, "h")
    assert model.fc.weight.dtype == paddle.float32
    assert np.allclose(model.fc.weight.numpy(), src["fc.weight"])


def test_mobilenet_v2_weights_into_v1_through_a_command_are_summarised(tmp_path):
    """The case users hit (issue 14): a MobileNetV2 .pdparams as Global.pretrained_model of a V1
    config. Only conv1 and fc share names; the error stays a few lines with counts, not the ~400
    names, and nothing is exported."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    v2 = build_model_from_arch({"name": "mobilenet_v2", "class_num": 10, "scale": 1.0})
    paddle.save(v2.state_dict(), str(tmp_path / "v2.pdparams"))
    (tmp_path / "labels.txt").write_text("".join(f"{i} c{i}\n" for i in range(10)))
    r = subprocess.run([sys.executable, os.path.join(root, "tools", "export.py"), "-c",
                        os.path.join(root, "configs", "demo.yaml"), "-o",
                        f"Global.pretrained_model={tmp_path / 'v2.pdparams'}",
                        f"Global.save_inference_dir={tmp_path / 'inf'}",
                        f"Infer.class_id_map_file={tmp_path / 'labels.txt'}"],
                       capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 1, r.stderr[-3000:]
    err = r.stderr[r.stderr.index("error: "):]                # after Paddle's own warnings
    lines = err.strip().splitlines()
    assert len(lines) <= 14 and len(err) < 3000, err          # header, 2 lists, <= 11 mis-shaped
    assert "v2.pdparams do not fit the model built from Arch" in lines[0]
    missing = next(ln for ln in lines if ln.startswith("  missing: "))
    unexpected = next(ln for ln in lines if ln.startswith("  unexpected: "))
    assert missing.endswith(f"... and {137 - 7 - 20} more")      # conv1's 5 and fc's 2 match
    n_v2 = len(v2.state_dict())
    assert unexpected.endswith(f"... and {n_v2 - 5 - 2 - 20} more")
    assert not (tmp_path / "inf").exists()
