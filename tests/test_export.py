"""Export: PIR + legacy from one process, softmax, input `x` with a dynamic batch, labels and
export_meta.json, and the errors for bad weights / labels / export folders."""
import json
import os

import numpy as np
import pytest
import yaml

from deploy_helpers import (DEMO, export_overrides, lite_or_skip, load_cfg, make_weights, o_args,
                            onnx_or_skip, run_tool, shared_export, write_labels)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


def _dygraph(cfg, weights, batch, softmax=True):
    from ppmobilenet.deploy.predictors import DygraphPredictor
    return DygraphPredictor(cfg, weights, softmax=softmax).predict(batch)


def test_export_writes_pir_and_legacy_with_labels_and_meta(exported):
    d = exported["dir"]
    for name in ("inference.json", "inference.pdiparams", "lite/inference.pdmodel",
                 "lite/inference.pdiparams", "labels.txt", "export_meta.json"):
        assert os.path.getsize(os.path.join(d, name)) > 0, name
    # Two formats: a PIR JSON program and a legacy protobuf ProgramDesc.
    with open(os.path.join(d, "inference.json")) as f:
        json.load(f)
    from paddle.base.proto import framework_pb2
    prog = framework_pb2.ProgramDesc()
    with open(os.path.join(d, "lite", "inference.pdmodel"), "rb") as f:
        prog.ParseFromString(f.read())
    ops = [op.type for op in prog.blocks[0].ops]
    assert ops[0] == "feed" and ops[-1] == "fetch"
    assert ops[-2] == "softmax", ops[-4:]          # the graph ends in softmax
    assert "flatten_contiguous_range" not in ops and "relu6" not in ops  # Lite-breaking ops
    feed_vars = [v for v in prog.blocks[0].vars if v.name == "x"]
    assert feed_vars and list(feed_vars[0].type.dense_tensor.tensor.dims) == [-1, 3, 64, 64]

    meta = json.load(open(os.path.join(d, "export_meta.json")))
    assert meta["model"] == {"name": "mobilenet_v1", "scale": 0.25, "head": "classic", "class_num": 10}
    assert meta["image_shape"] == [3, 64, 64] and meta["input_name"] == "x" and meta["softmax"]
    assert [next(iter(op)) for op in meta["preprocess"]] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert open(os.path.join(d, "labels.txt")).read().splitlines()[3] == "3 three"
    # The export checked both formats against dygraph and said so.
    assert any("inference.json) vs dygraph" in line and "-> ok" in line for line in exported["log"])


def test_both_formats_run_any_batch_size_and_match_dygraph(exported):
    from ppmobilenet.deploy.predictors import PaddlePredictor
    rng = np.random.RandomState(1)
    for n in (1, 3):
        batch = rng.standard_normal((n, 3, 64, 64)).astype("float32")
        ref = _dygraph(exported["cfg"], exported["weights"], batch)
        for legacy in (False, True):
            out = PaddlePredictor(exported["dir"], legacy=legacy).predict(batch)
            assert out.shape == (n, 10)
            np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)
            assert np.abs(out - ref).max() < 1e-5
            assert (out.argmax(1) == ref.argmax(1)).all()
    # The sharpened weights make the check meaningful: probabilities are far from uniform.
    assert ref.max() > 0.3


@pytest.mark.slow
def test_export_without_softmax_gives_logits(tmp_path):
    from ppmobilenet.deploy.export import export_model
    from ppmobilenet.deploy.predictors import PaddlePredictor
    w = make_weights(str(tmp_path / "w.pdparams"), name="mobilenet_v2", scale=0.5, sharpen=1.0)
    labels = write_labels(str(tmp_path / "l.txt"))
    cfg = load_cfg(*export_overrides(str(tmp_path), w, labels, ["Arch.name=mobilenet_v2",
                                                                 "Arch.scale=0.5",
                                                                 "Export.softmax=False"])[1:])
    export_model(cfg, log=lambda m: None)
    batch = np.random.RandomState(2).standard_normal((2, 3, 64, 64)).astype("float32")
    out = PaddlePredictor(str(tmp_path / "inference")).predict(batch)
    ref = _dygraph(cfg, w, batch, softmax=False)
    assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()  # float32 rounding of logits
    assert np.abs(out.sum(1) - 1.0).max() > 0.1  # logits, not probabilities
    meta = json.load(open(tmp_path / "inference" / "export_meta.json"))
    assert meta["softmax"] is False and meta["model"]["head"] is None


def test_export_cli(tmp_path):
    w = make_weights(str(tmp_path / "w.pdparams"))
    labels = write_labels(str(tmp_path / "l.txt"))
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(export_overrides(str(tmp_path), w, labels)))
    assert r.returncode == 0, r.stderr[-3000:]
    checks = [ln for ln in r.stdout.splitlines() if " vs dygraph: " in ln]
    assert len(checks) == 2 and all(ln.endswith("-> ok") for ln in checks), r.stdout[-2000:]
    for name in ("inference.json", "lite/inference.pdmodel", "labels.txt", "export_meta.json"):
        assert os.path.isfile(tmp_path / "inference" / name)


def test_export_label_file_with_wrong_class_count_fails_naming_it(tmp_path):
    w = make_weights(str(tmp_path / "w.pdparams"))
    labels = write_labels(str(tmp_path / "three.txt"), n=3)
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(export_overrides(str(tmp_path), w, labels)))
    assert r.returncode == 1
    assert "three.txt" in r.stderr and "3 labels" in r.stderr and "10 classes" in r.stderr
    assert not os.path.exists(tmp_path / "inference" / "inference.json")


def test_export_missing_weights_fails_naming_them(tmp_path):
    labels = write_labels(str(tmp_path / "l.txt"))
    missing = str(tmp_path / "nope" / "best_model")
    r = run_tool("export.py", "-c", "configs/demo.yaml",
                 *o_args(export_overrides(str(tmp_path), missing, labels)))
    assert r.returncode == 1
    assert missing in r.stderr


def test_export_weights_of_another_class_count_fail(tmp_path):
    # Export must not quietly re-initialise a mismatched classifier (fine-tuning may; shipping not).
    w = make_weights(str(tmp_path / "w.pdparams"), class_num=5)
    labels = write_labels(str(tmp_path / "l.txt"))
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(export_overrides(str(tmp_path), w, labels)))
    assert r.returncode == 1
    assert "w.pdparams" in r.stderr and "fc.weight" in r.stderr


@pytest.mark.parametrize("content, expect", [
    ("0 zero\n0 nil\n", "labels.txt:2: class id 0 appears twice"),
    ("0 zero\nfoo bar\n", "labels.txt:2: expected 'id name', got 'foo bar'"),
    ("0 zero\n2 two\n", "ids must run 0..1"),
    ("", "no labels"),
])
def test_bad_label_files(tmp_path, content, expect):
    from ppmobilenet.deploy import DeployError
    from ppmobilenet.deploy.labels import read_labels
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(DeployError) as e:
        read_labels(str(path))
    assert str(path) in str(e.value) and expect in str(e.value)


def test_export_folder_missing_a_file_is_named(exported, tmp_path):
    import shutil
    from ppmobilenet.deploy import DeployError
    from ppmobilenet.deploy.predictors import PaddlePredictor
    d = tmp_path / "copy"
    shutil.copytree(exported["dir"], d)
    os.remove(d / "inference.pdiparams")
    with pytest.raises(DeployError, match="inference.pdiparams is missing"):
        PaddlePredictor(str(d))
    with pytest.raises(DeployError, match="export folder .*nowhere.*not found"):
        PaddlePredictor(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_export_section_of_the_config_does_what_the_flags_do(tmp_path, tmp_path_factory):
    """Every Export.* key, set in the YAML file and nothing on the command line: Lite targets
    and the interpreter that runs opt, opt's weight quantisation, ONNX, ONNX INT8 with its
    calibration count, and softmax. The Lite interpreter comes from Export.lite_python alone
    (PPMOBILENET_LITE_PYTHON is emptied for the run)."""
    lite = lite_or_skip()
    onnx_or_skip()
    w = make_weights(str(tmp_path / "w.pdparams"))
    labels = write_labels(str(tmp_path / "l.txt"))
    with open(DEMO) as f:
        cfg = yaml.safe_load(f)
    cache = tmp_path_factory.getbasetemp() / "export-digits"    # DemoDigits: INT8 calibration
    cfg["DataLoader"]["Train"]["dataset"]["cache_dir"] = str(cache)
    cfg["Export"] = {"lite_targets": ["arm", "x86"], "lite_python": lite.python, "onnx": True,
                     "quant_type": "QUANT_INT16", "int8": True, "int8_calibration_images": 100,
                     "softmax": False}
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = run_tool("export.py", "-c", str(path), *o_args(export_overrides(str(tmp_path), w, labels)),
                 env={"PPMOBILENET_LITE_PYTHON": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "inference"
    checks = [ln for ln in r.stdout.splitlines() if " vs " in ln and "max abs diff" in ln]
    judged = [ln for ln in checks if not ln.startswith("INT8")]      # INT8 is reported, not judged
    assert [ln.split(":")[0] for ln in judged] == [
        "Paddle Inference (inference.json) vs dygraph", "Paddle Inference (lite/inference.pdmodel) vs dygraph",
        "Paddle Lite x86 .nb vs Paddle Inference", "ONNX Runtime vs Paddle Inference"], r.stdout[-3000:]
    assert all(ln.endswith("-> ok") for ln in judged), r.stdout[-3000:]
    assert any(ln.startswith("INT8 ONNX Runtime vs fp32 ONNX Runtime") for ln in checks)
    assert f"under {lite.python}" in r.stdout and "(--lite-python / Export.lite_python)" in r.stdout
    meta = json.load(open(out / "export_meta.json"))
    assert meta["softmax"] is False
    assert (meta["lite"]["arm"]["quant_type"], meta["lite"]["x86"]["quant_type"]) == ("QUANT_INT16", None)
    for name in ("lite/mobilenet_v1_arm.nb", "lite/mobilenet_v1_x86.nb", "inference.onnx",
                 "inference_int8.onnx"):
        assert os.path.getsize(out / name) > 10_000, name
    assert "; 100 calibration images" in r.stdout, r.stdout[-3000:]
    from paddle.base.proto import framework_pb2
    prog = framework_pb2.ProgramDesc()
    prog.ParseFromString((out / "lite" / "inference.pdmodel").read_bytes())
    assert "softmax" not in [op.type for op in prog.blocks[0].ops]     # Export.softmax: false
