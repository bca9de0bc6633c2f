"""Paddle Lite: opt for arm and x86 on every registry model, the x86 numeric check (and that it
can fail), .nb validation before Lite sees a file, interpreter discovery and provisioning, and
tools/lite_predict.py (standalone) against paddle.vision's preprocessing and Paddle Inference.

Without Lite these tests skip with the reason, unless PPMOBILENET_REQUIRE_LITE=1 (CI), where
they fail."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deploy_helpers import (ROOT, load_cfg, lite_or_skip, make_digit_images, make_weights,
                            shared_export, write_labels)


@pytest.fixture(scope="module")
def lite():
    return lite_or_skip()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, lite):
    exp = shared_export(tmp_path_factory)
    assert exp["lite"], "Lite was found above, so the shared export must have converted"
    return exp


def _lite_predict_module():
    spec = importlib.util.spec_from_file_location("lite_predict", os.path.join(ROOT, "tools", "lite_predict.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_converted_arm_and_x86_and_checked(exported):
    d = exported["dir"]
    meta = json.load(open(os.path.join(d, "export_meta.json")))
    for target in ("arm", "x86"):
        nb = os.path.join(d, "lite", f"mobilenet_v1_{target}.nb")
        assert os.path.getsize(nb) > 100_000
        assert meta["lite"][target]["file"] == f"lite/mobilenet_v1_{target}.nb"
    line = [m for m in exported["log"] if m.startswith("Paddle Lite x86 .nb vs Paddle Inference")]
    assert line and line[0].endswith("-> ok"), exported["log"]
    assert exported["report"]["checks"][2]["max_abs_diff"] <= 1e-4


def test_x86_nb_matches_paddle_inference_on_real_images(exported, lite):
    from ppmobilenet.deploy.checks import compare
    from ppmobilenet.deploy.predictors import LitePredictor, PaddlePredictor
    from ppmobilenet.deploy.preprocess import build_preprocess, load_image, transform_ops
    pre = build_preprocess(transform_ops(exported["cfg"]))
    batch = np.stack([pre(load_image(p)) for p in exported["images"]])
    ref = PaddlePredictor(exported["dir"]).predict(batch)
    got = LitePredictor(os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb"), runtime=lite).predict(batch)
    rep = compare(ref, got, 1e-4, "lite")
    assert rep["max_abs_diff"] <= 1e-4 and rep["top1_agree"] == len(batch)
    assert ref.max() > 0.3  # not a near-uniform softmax: the comparison means something


def test_check_fails_with_numbers_when_models_differ(tmp_path, exported, lite):
    """The same graph with other weights: the x86 .nb of model A against the export of model B."""
    from ppmobilenet.deploy import CheckFailed
    from ppmobilenet.deploy.export import export_model
    from ppmobilenet.deploy.checks import check_against_paddle, sample_batch
    from ppmobilenet.deploy.predictors import LitePredictor
    w = make_weights(str(tmp_path / "other.pdparams"), seed=7)
    cfg = load_cfg(f"Global.pretrained_model={w}", f"Global.save_inference_dir={tmp_path / 'b'}",
                   f"Infer.class_id_map_file={exported['labels']}")
    export_model(cfg, log=lambda m: None)
    nb_a = LitePredictor(os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb"), runtime=lite)
    with pytest.raises(CheckFailed) as e:
        check_against_paddle(str(tmp_path / "b"), nb_a, sample_batch([3, 64, 64]), 1e-4, "lite",
                             log=lambda m: None)
    msg = str(e.value)
    assert "max abs diff" in msg and "FAILED" in msg and "tolerance 0.0001" in msg
    # The export path: the .nb of a corrupt legacy export (A's program with B's parameter file,
    # whose tensors come in another order) passes opt but crashes Lite's runtime; the crash is
    # contained in the worker, reported, and no .nb is left to ship.
    from ppmobilenet.deploy import DeployError
    from ppmobilenet.deploy.export import _lite
    d = tmp_path / "mixed"
    shutil.copytree(exported["dir"], d)
    shutil.copy(tmp_path / "b" / "lite" / "inference.pdiparams", d / "lite" / "inference.pdiparams")
    with pytest.raises(DeployError) as e:
        _lite(str(d), ["arm", "x86"], None, None, True, sample_batch([3, 64, 64]), {"checks": []},
              log=lambda m: None)
    assert "removed" in str(e.value) and not list((d / "lite").glob("*.nb"))
    assert json.load(open(d / "export_meta.json"))["lite"] == {}


# Every registry model: the graph must convert for arm (every op has an ARM kernel) and x86, and
# the x86 .nb must match Paddle Inference. Small class_num and input: the graph is what matters.
REGISTRY = [
    ("mobilenet_v1", "demo", 0.25), ("mobilenet_v1", "demo", 1.0),
    ("mobilenet_v1", "classic", 0.25), ("mobilenet_v1", "classic", 1.0),
    ("mobilenet_v2", None, 0.5), ("mobilenet_v2", None, 1.0),
]


@pytest.mark.parametrize("name, head, scale", REGISTRY, ids=[f"{n}-{h}-{s}" for n, h, s in REGISTRY])
def test_every_registry_model_converts_for_arm_and_x86(tmp_path, lite, name, head, scale):
    from ppmobilenet.deploy import inspect_nb
    from ppmobilenet.deploy.export import export_model
    w = make_weights(str(tmp_path / "w.pdparams"), name=name, class_num=4, scale=scale,
                     head=head or "demo", sharpen=1.0)
    labels = write_labels(str(tmp_path / "l.txt"), n=4)
    over = [f"Arch.name={name}", "Arch.class_num=4", f"Arch.scale={scale}", "Metric.topk=[1]", "Infer.topk=3",
            "Global.image_shape=[3, 32, 32]", f"Global.pretrained_model={w}",
            f"Global.save_inference_dir={tmp_path / 'inf'}", f"Infer.class_id_map_file={labels}"]
    if head:
        over.append(f"Arch.head={head}")
    logs = []
    report = export_model(load_cfg(*over), lite_targets=["arm", "x86"], log=logs.append)
    arm, x86 = inspect_nb(report["lite"]["arm"]), inspect_nb(report["lite"]["x86"])
    # both targets hold every weight of the graph (opt folds BatchNorm into the convs alike)
    assert arm["params"] == x86["params"] > 10, (arm, x86)
    assert arm["opt_version"] == x86["opt_version"] == lite.lite_version
    lite_check = report["checks"][-1]
    assert lite_check["what"].startswith("Paddle Lite x86") and lite_check["max_abs_diff"] <= 1e-4


def test_arm_only_conversion_still_checks_with_a_temporary_x86_nb(tmp_path, lite, exported):
    from ppmobilenet.deploy.checks import sample_batch
    from ppmobilenet.deploy.export import _lite
    d = tmp_path / "exp"
    shutil.copytree(exported["dir"], d)
    for f in (d / "lite").glob("*.nb"):
        f.unlink()
    meta = json.load(open(d / "export_meta.json"))
    meta["lite"] = {}  # as a fresh export leaves it
    (d / "export_meta.json").write_text(json.dumps(meta))
    report = {"checks": []}
    done = _lite(str(d), ["arm"], None, None, True, sample_batch([3, 64, 64]), report,
                 log=lambda m: None)
    assert set(done) == {"arm"} and report["checks"][0]["max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in (d / "lite").glob("*.nb")) == ["mobilenet_v1_arm.nb"]
    assert set(json.load(open(d / "export_meta.json"))["lite"]) == {"arm"}


@pytest.mark.parametrize("quant, smaller", [("QUANT_INT8", (0.2, 0.5)), ("QUANT_INT16", (0.45, 0.75))])
def test_weight_quantisation_of_the_arm_nb_only_and_the_fp32_x86_check_still_runs(
        tmp_path, lite, exported, quant, smaller):
    """QUANT_INT8 stores the weights in 1 byte, QUANT_INT16 in 2 (the .nb shrinks to about
    1/3 and 1/2 of the fp32 one, the topology aside); the x86 .nb stays fp32 for the check."""
    from ppmobilenet.deploy.export import _lite
    d = tmp_path / "q"
    shutil.copytree(exported["dir"], d)
    logs, report = [], {"checks": []}
    batch = np.random.RandomState(3).standard_normal((4, 3, 64, 64)).astype("float32")
    done = _lite(str(d), ["arm", "x86"], None, quant, True, batch, report, log=logs.append)
    full = os.path.getsize(os.path.join(exported["dir"], "lite", "mobilenet_v1_arm.nb"))
    ratio = os.path.getsize(done["arm"]) / full
    assert smaller[0] < ratio < smaller[1], (quant, ratio)
    assert os.path.getsize(done["x86"]) > 0.9 * full          # fp32, for the check
    assert report["checks"][0]["max_abs_diff"] <= 1e-4
    assert any("x86 stays fp32" in m for m in logs)
    meta = json.load(open(d / "export_meta.json"))
    assert meta["lite"]["arm"]["quant_type"] == quant and meta["lite"]["x86"]["quant_type"] is None


# ---------- bad .nb files: clear errors, no crash ----------

def _bad_nbs(good, folder):
    data = open(good, "rb").read()
    cases = {"half.nb": data[: len(data) // 2], "minus10.nb": data[:-10], "header_only.nb": data[:30],
             "tiny.nb": data[:10], "random.nb": np.random.RandomState(0).bytes(5000),
             "text.nb": b"this is not a model\n" * 50, "trailing.nb": data + b"\0" * 7}
    out = {}
    for name, blob in cases.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(blob)
        out[name] = path
    return out


def test_bad_nb_files_are_refused_naming_the_file(tmp_path, exported, lite):
    from ppmobilenet.deploy import DeployError, inspect_nb, run_lite
    good = os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb")
    lp = _lite_predict_module()
    assert inspect_nb(good)["params"] == 56 and lp.check_nb(good) == lite.lite_version
    for name, path in _bad_nbs(good, str(tmp_path)).items():
        with pytest.raises(DeployError) as e:
            inspect_nb(path)
        assert path in str(e.value), name
        with pytest.raises(lp.LitePredictError) as e2:  # the board script agrees
            lp.check_nb(path)
        assert path in str(e2.value), name
        with pytest.raises(DeployError, match=name):   # and nothing reaches Lite
            run_lite(path, [np.zeros((1, 3, 64, 64), "float32")], runtime=lite)
    with pytest.raises(DeployError, match="not found"):
        inspect_nb(str(tmp_path / "missing.nb"))


def test_lite_abort_becomes_an_error_not_a_crash(tmp_path, lite):
    """Were a bad file to reach Lite anyway, its abort stays in the worker process."""
    from ppmobilenet.deploy import DeployError
    bad = tmp_path / "bad.nb"
    bad.write_bytes(b"\x02\x00v2.13-rc\0\0\0\0\0\0\0\0" + (10).to_bytes(8, "little") + b"\xff" * 200)
    np.savez(tmp_path / "in.npz", b0=np.zeros((1, 3, 8, 8), "float32"))
    with pytest.raises(DeployError) as e:
        lite.run(["run", "--nb", str(bad), "--inputs", str(tmp_path / "in.npz"),
                  "--outputs", str(tmp_path / "out.npz")])
    assert "failed under" in str(e.value) and lite.python in str(e.value)


def test_arm_nb_is_refused_for_x86_prediction(exported):
    from ppmobilenet.deploy import DeployError
    from ppmobilenet.deploy.predictors import LitePredictor
    with pytest.raises(DeployError, match="garbage"):
        LitePredictor(os.path.join(exported["dir"], "lite", "mobilenet_v1_arm.nb"))


# ---------- finding the interpreter ----------

def test_no_lite_gives_the_fix_command(tmp_path, monkeypatch):
    from ppmobilenet.deploy import LiteUnavailable, find_lite_python
    monkeypatch.delenv("PPMOBILENET_LITE_PYTHON", raising=False)
    monkeypatch.setenv("PPMOBILENET_LITE_VENV", str(tmp_path / "no-venv"))
    with pytest.raises(LiteUnavailable) as e:
        find_lite_python()
    msg = str(e.value)
    assert "provision_lite.py" in msg and "PPMOBILENET_LITE_PYTHON" in msg and "paddlelite==2.13rc0" in msg


def test_named_interpreter_without_paddlelite_is_an_error(monkeypatch):
    from ppmobilenet.deploy import DeployError, find_lite_python
    with pytest.raises(DeployError) as e:
        find_lite_python(sys.executable)  # Python 3.11: no paddlelite wheel
    assert sys.executable in str(e.value) and "provision_lite.py" in str(e.value)
    monkeypatch.setenv("PPMOBILENET_LITE_PYTHON", "/nonexistent/python3.10")
    with pytest.raises(DeployError, match="/nonexistent/python3.10"):
        find_lite_python()


def test_export_cli_without_lite_fails_clearly(tmp_path):
    from deploy_helpers import export_overrides, o_args, run_tool
    w = make_weights(str(tmp_path / "w.pdparams"))
    labels = write_labels(str(tmp_path / "l.txt"))
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(export_overrides(str(tmp_path), w, labels)),
                 "--lite", "arm", env={"PPMOBILENET_LITE_PYTHON": "", "PPMOBILENET_LITE_VENV": str(tmp_path / "none")})
    assert r.returncode == 1
    assert "Paddle Lite is not available" in r.stderr and "provision_lite.py" in r.stderr


# ---------- tools/lite_predict.py ----------

EVAL_PIPELINES = [
    [{"Resize": {"size": 64}}, {"CenterCrop": {"size": 56}}, {"ToTensor": {}},
     {"Normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}],
    [{"Resize": {"size": [40, 50], "interpolation": "bicubic"}}, {"ToTensor": {}},
     {"Normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}],
    [{"Resize": {"size": 71}}, {"CenterCrop": {"size": [64, 60]}}, {"ToTensor": {}}],
    [{"CenterCrop": {"size": 48}}, {"Normalize": {"mean": [127.5, 127.5, 127.5],
                                                  "std": [127.5, 127.5, 127.5], "data_format": "HWC"}},
     {"Transpose": {}}],
]


@pytest.mark.parametrize("ops", EVAL_PIPELINES, ids=["imagenet", "tuple-bicubic", "no-normalize", "hwc"])
def test_lite_predict_preprocessing_matches_paddle_vision(tmp_path, ops):
    from ppmobilenet.data import build_transforms, load_image
    lp = _lite_predict_module()
    fn = build_transforms(ops)
    for path in make_digit_images(str(tmp_path)):
        ref = fn(load_image(path))
        got = lp.preprocess(lp.load_image(path), ops)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() <= 1e-6, (path, np.abs(got - ref).max())


def test_lite_predict_script_agrees_with_paddle_inference(exported, lite):
    """The board script, run as a user would under the Lite interpreter on the x86 .nb."""
    nb = os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb")
    folder = os.path.dirname(exported["images"][0])
    r = subprocess.run([lite.python, os.path.join(ROOT, "tools", "lite_predict.py"), "--model", nb,
                        "--topk", "3", "--batch-size", "4", "--json", folder],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout)["results"]
    from ppmobilenet.deploy.labels import read_labels
    from ppmobilenet.deploy.classify import classify
    from ppmobilenet.deploy.predictors import PaddlePredictor
    from ppmobilenet.deploy.preprocess import build_preprocess, list_images, transform_ops
    ref = classify(PaddlePredictor(exported["dir"]), list_images(folder),
                   build_preprocess(transform_ops(exported["cfg"])), topk=3,
                   labels=read_labels(os.path.join(exported["dir"], "labels.txt")))
    assert [os.path.basename(x["image"]) for x in results] == [os.path.basename(x["image"]) for x in ref]
    for a, b in zip(results, ref):
        assert a["topk"][0]["class_id"] == b["topk"][0]["class_id"]
        assert abs(a["topk"][0]["score"] - b["topk"][0]["score"]) <= 1e-4
        assert a["topk"][0]["label"] == b["topk"][0]["label"] is not None and len(a["topk"]) == 3
    # the readable table: one line per image, its top-1 as the JSON gave it
    first = exported["images"][0]
    r = subprocess.run([lite.python, os.path.join(ROOT, "tools", "lite_predict.py"), "--model", nb,
                        first], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    top = next(x for x in results if os.path.basename(x["image"]) == os.path.basename(first))["topk"][0]
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"{first}  ->  {top['class_id']} {top['label']}  {top['score']:.4f}   "), (lines, top)


def test_lite_predict_script_bad_inputs(tmp_path, exported, lite):
    script = os.path.join(ROOT, "tools", "lite_predict.py")
    nb = os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb")
    trunc = tmp_path / "trunc.nb"
    trunc.write_bytes(open(nb, "rb").read()[:-100])
    shutil.copy(os.path.join(exported["dir"], "export_meta.json"), tmp_path / "export_meta.json")
    notimg = tmp_path / "notes.png"
    notimg.write_text("hello")
    cases = [([str(trunc), exported["images"][0]], "truncated"),
             ([nb, str(tmp_path / "missing.png")], "missing.png: not found"),
             ([nb, str(notimg)], "notes.png: not a readable image")]
    for (model, image), expect in cases:
        r = subprocess.run([lite.python, script, "--model", model, image], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 2 and expect in r.stderr, (expect, r.returncode, r.stderr[-1500:])
    bad_labels = write_labels(str(tmp_path / "three.txt"), n=3)
    r = subprocess.run([lite.python, script, "--model", nb, "--labels", bad_labels, exported["images"][0]],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "three.txt" in r.stderr and "10 classes" in r.stderr


def test_lite_predict_refuses_an_nb_of_another_opt_version(tmp_path, exported, lite):
    """Lite reads only the .nb of its own opt release (docs/deploy_lite.md, the version rule):
    the same model with another version in its header is refused before Lite sees it."""
    good = os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb")
    data = bytearray(open(good, "rb").read())
    version = data[2:18].split(b"\0", 1)[0]
    assert version.decode() == lite.lite_version == "v2.13-rc"
    other = b"v2.12-rc"
    data[2:2 + len(other)] = other
    (tmp_path / "old.nb").write_bytes(bytes(data))
    shutil.copy(os.path.join(exported["dir"], "export_meta.json"), tmp_path / "export_meta.json")
    r = subprocess.run([lite.python, os.path.join(ROOT, "tools", "lite_predict.py"), "--model",
                        str(tmp_path / "old.nb"), exported["images"][0]],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert f"{tmp_path / 'old.nb'} was written by opt v2.12-rc but the runtime is Paddle Lite " \
           f"v2.13-rc" in r.stderr, r.stderr[-2000:]
    r = subprocess.run([lite.python, os.path.join(ROOT, "tools", "lite_predict.py"), "--model", good,
                        exported["images"][0]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]      # the untouched file passes


def test_lite_predict_threads_and_list_inputs(tmp_path, exported, lite):
    """A list file (relative paths against its folder, `path label` lines, comments) and a
    folder give the images in their order; --threads only changes the speed, never the numbers.
    The x86 wheel has no MobileConfig.set_threads, so here --threads 2 changes nothing and the
    script says so (docs/deploy_lite.md); on an ARM build it sets Lite's threads. A thread count,
    batch size or top-k below 1 is refused by the option's name."""
    nb = os.path.join(exported["dir"], "lite", "mobilenet_v1_x86.nb")
    images = exported["images"]
    lst = tmp_path / "sub" / "list.txt"
    lst.parent.mkdir()
    rel = [os.path.relpath(p, lst.parent) for p in images[:3]]
    lst.write_text("# images to check\n" + "".join(f"{p} {i}\n" for i, p in enumerate(reversed(rel))))

    def run(*args):
        return subprocess.run([lite.python, os.path.join(ROOT, "tools", "lite_predict.py"), "--model", nb,
                               "--json", *args], capture_output=True, text=True, timeout=300)

    def results(r):
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)["results"]

    has_set_threads = subprocess.run(
        [lite.python, "-c", "from paddlelite.lite import MobileConfig; print(hasattr(MobileConfig, 'set_threads'))"],
        capture_output=True, text=True, timeout=120).stdout.strip()
    assert has_set_threads == "False"           # PyPI's x86 paddlelite 2.13rc0, as documented
    note = "--threads 2 has no effect here"
    r1 = run("--threads", "1", str(lst), images[4])
    one = results(r1)
    assert "--threads" not in r1.stderr, r1.stderr[-2000:]
    assert [os.path.basename(x["image"]) for x in one] == \
        [os.path.basename(p) for p in list(reversed(images[:3])) + [images[4]]]
    assert os.path.normpath(one[0]["image"]) == images[2]     # relative to the list file's folder
    r2 = run("--threads", "2", "--batch-size", "2", str(lst), images[4])
    two = results(r2)
    assert "cannot set its thread count (no MobileConfig.set_threads" in r2.stderr and note in r2.stderr, \
        r2.stderr[-2000:]
    assert [x["image"] for x in two] == [x["image"] for x in one]
    for a, b in zip(one, two):
        assert a["topk"][0]["class_id"] == b["topk"][0]["class_id"]
        assert abs(a["topk"][0]["score"] - b["topk"][0]["score"]) <= 1e-6

    for option, value in (("--threads", "0"), ("--threads", "two"), ("--batch-size", "0"), ("--topk", "-1")):
        r = run(option, value, images[4])
        assert r.returncode == 2 and not r.stdout, (option, value, r.returncode, r.stdout[-500:])
        assert f"argument {option}: expected an integer >= 1, got '{value}'" in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr


# ---------- provisioning ----------

@pytest.mark.slow
def test_provision_lite_builds_a_working_venv(tmp_path):
    from ppmobilenet.deploy.lite_env import find_base_python
    if find_base_python() is None:
        pytest.skip("no Python 3.8-3.10 on this machine to build the Lite venv from")
    venv = tmp_path / "lite-venv"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "provision_lite.py"), "--venv", str(venv)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    python = r.stdout.strip().splitlines()[-1]
    assert python == str(venv / "bin" / "python")
    from ppmobilenet.deploy.lite_env import probe
    assert probe(python, "test").lite_version.startswith("v2.13")
    # a second run only checks
    r2 = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "provision_lite.py"), "--venv", str(venv)],
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and "is ready" in r2.stderr
