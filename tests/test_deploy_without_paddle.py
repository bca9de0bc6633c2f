"""The ONNX Runtime and Lite predictors run in a process that never imports Paddle: an import
hook refuses `paddle` (and the package's Paddle side: models, weights, data, engine, kernels),
and ppmobilenet.deploy with its runtimes still imports and predicts on a real export, with the
numbers Paddle Inference gives in this process. So their memory and start-up are their own."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from deploy_helpers import ROOT, lite_or_skip, onnx_or_skip, shared_export

REFUSED = ("paddle", "ppmobilenet.models", "ppmobilenet.weights", "ppmobilenet.data", "ppmobilenet.engine",
           "ppmobilenet.kernels", "ppmobilenet.deploy.export", "ppmobilenet.deploy.predictors")

# argv: the export folder, inputs .npy, outputs .npz; prints the modules loaded as JSON
SCRIPT = textwrap.dedent("""
    import json, sys
    REFUSED = {refused!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if any(name == r or name.startswith(r + ".") for r in REFUSED):
                raise ImportError("refused by the test: " + name)
            return None

    sys.meta_path.insert(0, Refuse())
    sys.path.insert(0, {root!r})
    import numpy as np
    import ppmobilenet.deploy
    from ppmobilenet.deploy.runtimes import LitePredictor, OnnxPredictor, lite_nb_for, resolve_backend
    export_dir, inputs, outputs, with_lite = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    x = np.load(inputs)
    assert resolve_backend("auto", export_dir) == "onnx"
    out = {{"onnx": OnnxPredictor(export_dir + "/inference.onnx", threads=1).predict(x)}}
    if with_lite:
        out["lite"] = LitePredictor(lite_nb_for(export_dir)).predict(x)
    np.savez(outputs, **out)
    print(json.dumps(sorted(m for m in sys.modules if m == "paddle" or m.startswith(("paddle.", "ppmobilenet")))))
""").format(refused=REFUSED, root=ROOT)


def _run(*args):
    return subprocess.run([sys.executable, "-c", SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_the_hook_refuses_paddle():
    """The hook bites: with it, an import of paddle or of the package's Paddle side fails."""
    for module in ("paddle", "ppmobilenet.deploy.export"):
        r = subprocess.run([sys.executable, "-c", SCRIPT.split("import numpy as np")[0] + f"import {module}\n"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode != 0 and f"refused by the test: {module}" in r.stderr, r.stderr


def test_onnx_and_lite_predictors_run_without_paddle(tmp_path_factory, tmp_path):
    onnx_or_skip()
    exported = shared_export(tmp_path_factory)
    assert exported["onnx"]
    with_lite = exported["lite"] or lite_or_skip() is None  # lite_or_skip fails where Lite is required
    from ppmobilenet.data import load_image
    from ppmobilenet.deploy.predictors import PaddlePredictor
    from ppmobilenet.deploy.preprocess import build_preprocess, transform_ops
    pre = build_preprocess(transform_ops(exported["cfg"]))
    x = np.stack([pre(load_image(p)) for p in exported["images"]])
    np.save(tmp_path / "x.npy", x)
    r = _run(exported["dir"], tmp_path / "x.npy", tmp_path / "out.npz", int(with_lite))
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m == "paddle" or m.startswith("paddle.")], loaded
    assert "ppmobilenet.deploy.runtimes" in loaded and "ppmobilenet.deploy.export" not in loaded
    ref = PaddlePredictor(exported["dir"]).predict(x)
    got = np.load(tmp_path / "out.npz")
    assert set(got.files) == ({"onnx", "lite"} if with_lite else {"onnx"})
    for name in got.files:
        assert got[name].shape == ref.shape and np.abs(got[name] - ref).max() <= 1e-4, name
    assert os.path.isfile(os.path.join(exported["dir"], "inference.onnx"))

