"""ONNX: paddle2onnx conversion of the export, checked against onnxruntime (<= 1e-5)."""
import os

import numpy as np
import pytest

from deploy_helpers import onnx_or_skip, shared_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    onnx_or_skip()
    exp = shared_export(tmp_path_factory)
    assert exp["onnx"]
    return exp


def test_onnx_written_and_checked_by_export(exported):
    path = os.path.join(exported["dir"], "inference.onnx")
    assert os.path.getsize(path) > 100_000
    line = [m for m in exported["log"] if m.startswith("ONNX Runtime vs Paddle Inference")]
    assert line and line[0].endswith("-> ok")
    assert exported["report"]["checks"][-1]["max_abs_diff"] <= 1e-5


def test_onnx_input_x_dynamic_batch_matches_paddle(exported):
    import onnx
    from ppmobilenet.deploy.predictors import OnnxPredictor, PaddlePredictor
    path = os.path.join(exported["dir"], "inference.onnx")
    graph = onnx.load(path).graph
    assert graph.input[0].name == "x"
    dims = graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    ort_pred, pd_pred = OnnxPredictor(path, threads=1), PaddlePredictor(exported["dir"])
    for n in (1, 5):
        batch = np.random.RandomState(n).standard_normal((n, 3, 64, 64)).astype("float32")
        a, b = ort_pred.predict(batch), pd_pred.predict(batch)
        assert a.shape == (n, 10) and np.abs(a - b).max() <= 1e-5
        assert (a.argmax(1) == b.argmax(1)).all()


def test_onnx_from_scratch_and_a_broken_file(exported, tmp_path):
    import shutil
    from ppmobilenet.deploy import DeployError
    from ppmobilenet.deploy.onnx import convert_onnx
    from ppmobilenet.deploy.predictors import OnnxPredictor
    d = tmp_path / "exp"
    shutil.copytree(exported["dir"], d)
    os.remove(d / "inference.onnx")
    out = convert_onnx(str(d), log=lambda m: None)
    assert os.path.isfile(out)
    with open(out, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DeployError, match="inference.onnx: cannot be loaded"):
        OnnxPredictor(out)
    with pytest.raises(DeployError, match="not found"):
        OnnxPredictor(str(tmp_path / "none.onnx"))
    os.remove(d / "inference.json")
    with pytest.raises(DeployError, match="inference.json is missing"):
        convert_onnx(str(d), log=lambda m: None)
