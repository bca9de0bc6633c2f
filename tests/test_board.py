"""The board path imports neither paddle nor the rest of the package: tools/lite_predict.py and
deploy/lite_worker.py run under an import hook that refuses `paddle` and every ppmobilenet
module but io and board, and still predict (a real x86 .nb, in Lite's own interpreter)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deploy_helpers import ROOT, lite_or_skip, shared_export

SCRIPT = os.path.join(ROOT, "tools", "lite_predict.py")
WORKER = os.path.join(ROOT, "ppmobilenet", "deploy", "lite_worker.py")
ALLOWED = ["ppmobilenet", "ppmobilenet.board", "ppmobilenet.io"]

# Runs `script` as __main__ with the hook in place; at exit prints the paddle / ppmobilenet
# modules that were loaded, as JSON on the last line of stderr.
GUARD = textwrap.dedent("""
    import atexit, json, runpy, sys
    ALLOWED = {allowed!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name == "paddle" or name.startswith("paddle.") or \\
                    (name.startswith("ppmobilenet.") and name not in ALLOWED):
                raise ImportError("refused by the board test: " + name)
            return None

    sys.meta_path.insert(0, Refuse())
    atexit.register(lambda: print(json.dumps(sorted(
        m for m in sys.modules if m == "paddle" or m.startswith(("paddle.", "ppmobilenet")))),
        file=sys.stderr))
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""").format(allowed=ALLOWED)


def guarded(python, script, *args, timeout=300):
    r = subprocess.run([python, "-c", GUARD, script, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=os.path.dirname(script))
    loaded = json.loads(r.stderr.strip().splitlines()[-1])
    return r, loaded


@pytest.fixture(scope="module")
def lite_export(tmp_path_factory):
    """(the shared export with its x86 .nb, the Lite interpreter)."""
    lite = lite_or_skip()
    exp = shared_export(tmp_path_factory)
    assert exp["lite"], "Lite was found, so the shared export must have converted"
    return exp, lite


def test_the_guard_refuses_the_rest_of_the_package(tmp_path):
    """The hook bites: a script importing ppmobilenet.errors (or paddle) fails under it."""
    for module in ("ppmobilenet.errors", "paddle"):
        probe = tmp_path / "probe.py"
        probe.write_text(f"import sys; sys.path.insert(0, {ROOT!r}); import {module}\n")
        r, loaded = guarded(sys.executable, str(probe))
        assert r.returncode != 0 and f"refused by the board test: {module}" in r.stderr
        assert module not in loaded


def test_lite_predict_predicts_without_paddle_or_the_package(lite_export):
    exported, lite = lite_export
    from ppmobilenet.deploy.predictors import PaddlePredictor
    from ppmobilenet.deploy.preprocess import build_preprocess, transform_ops
    from ppmobilenet.data import load_image
    nb = os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb")
    images = exported["images"]
    r, loaded = guarded(lite.python, SCRIPT, "--model", nb, "--json", "--topk", "3", *images)
    assert r.returncode == 0, r.stderr[-3000:]
    assert loaded == ALLOWED
    results = json.loads(r.stdout)["results"]
    assert [x["image"] for x in results] == images
    pre = build_preprocess(transform_ops(exported["cfg"]))
    ref = PaddlePredictor(exported["dir"]).predict(np.stack([pre(load_image(p)) for p in images]))
    names = [ln.split(" ", 1)[1] for ln in open(os.path.join(exported["dir"], "labels.txt")).read().splitlines()]
    assert len(names) == ref.shape[1]
    for row, want in zip(results, ref):
        top = row["topk"][0]
        assert top["class_id"] == int(want.argmax()) and abs(top["score"] - float(want.max())) <= 1e-4
        assert top["label"] == names[top["class_id"]] and len(row["topk"]) == 3


def test_board_modules_import_without_paddle_where_paddle_is_installed():
    """Under this interpreter paddle is importable, so the refusal is a real test of the import
    chain of both board-side scripts (their --help runs every module-level import)."""
    for script in (SCRIPT, WORKER):
        r, loaded = guarded(sys.executable, script, "--help")
        assert r.returncode == 0, r.stderr[-3000:]
        assert loaded == ALLOWED, script
