"""tools/infer.py: the chain export -> Lite arm+x86 -> x86 check -> ONNX check -> the same
top-1 from all four backends on real PNG digits (RGB, grayscale, RGBA, palette, odd sizes);
file / folder / list-file inputs; table and JSON; and each bad input named in its error."""
import json
import os
import shutil

import numpy as np
import pytest

from deploy_helpers import (DIGIT_NAMES, EVAL_TRANSFORMS, export_overrides, lite_or_skip,
                            make_digit_images, make_weights, o_args, onnx_or_skip, run_tool,
                            write_labels)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """tools/export.py with --lite arm,x86 --onnx, as a user runs it."""
    lite = lite_or_skip()
    onnx_or_skip()
    tmp = str(tmp_path_factory.mktemp("chain"))
    weights = make_weights(os.path.join(tmp, "w.pdparams"), seed=3)
    labels = write_labels(os.path.join(tmp, "labels.txt"))
    images = make_digit_images(os.path.join(tmp, "images"))
    overrides = export_overrides(tmp, weights, labels)
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(overrides), "--lite", "arm,x86",
                 "--onnx", "--quant-type", "QUANT_INT16", env={"PPMOBILENET_LITE_PYTHON": lite.python})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"tmp": tmp, "dir": os.path.join(tmp, "inference"), "overrides": overrides,
            "images": images, "stdout": r.stdout, "lite": lite}


def _infer(chain, backend, *extra, config=True):
    args = ["--backend", backend, "--json", *extra]
    if config:
        args = ["-c", "configs/demo.yaml", *o_args(chain["overrides"])] + args
    r = run_tool("infer.py", *args, env={"PPMOBILENET_LITE_PYTHON": chain["lite"].python})
    assert r.returncode == 0, (backend, r.stderr[-3000:])
    return json.loads(r.stdout)["results"]


def test_export_cli_printed_every_check(chain):
    out = chain["stdout"]
    for what in ("Paddle Inference (inference.json) vs dygraph", "Paddle Lite x86 .nb vs Paddle Inference",
                 "ONNX Runtime vs Paddle Inference"):
        line = [x for x in out.splitlines() if x.startswith(what)]
        assert line and line[0].endswith("-> ok"), (what, out[-2000:])
    for name in ("lite/mobilenet_v1_arm.nb", "lite/mobilenet_v1_x86.nb", "inference.onnx"):
        assert os.path.isfile(os.path.join(chain["dir"], name))
    # --quant-type reached opt: the arm .nb holds 16-bit weights, the x86 one (checked) fp32
    meta = json.load(open(os.path.join(chain["dir"], "export_meta.json")))
    assert (meta["lite"]["arm"]["quant_type"], meta["lite"]["x86"]["quant_type"]) == ("QUANT_INT16", None)
    sizes = [os.path.getsize(os.path.join(chain["dir"], "lite", f"mobilenet_v1_{t}.nb")) for t in ("arm", "x86")]
    assert 0.45 < sizes[0] / sizes[1] < 0.75, sizes


def test_all_four_backends_agree_on_real_images(chain):
    folder = os.path.dirname(chain["images"][0])
    runs = {b: _infer(chain, b, "--input", folder, "--topk", "3", "--batch-size", "4")
            for b in ("dygraph", "paddle", "lite", "onnx")}
    ref = runs["paddle"]
    assert len(ref) == len(chain["images"])
    assert len({r["topk"][0]["class_id"] for r in ref}) > 1  # the images are told apart
    for backend, results in runs.items():
        assert [r["image"] for r in results] == [r["image"] for r in ref]
        for a, b in zip(results, ref):
            assert a["topk"][0]["class_id"] == b["topk"][0]["class_id"], (backend, a, b)
            assert abs(a["topk"][0]["score"] - b["topk"][0]["score"]) <= 1e-4, backend
            assert a["topk"][0]["label"] == DIGIT_NAMES[a["topk"][0]["class_id"]]


def test_inputs_file_folder_list_and_table(chain, tmp_path):
    lst = tmp_path / "list.txt"
    rel = [os.path.relpath(p, tmp_path) for p in chain["images"][:3]]
    lst.write_text("".join(f"{p} 0\n" for p in rel))
    by_list = _infer(chain, "paddle", "--input", str(lst))
    assert [r["image"] for r in by_list] == [os.path.join(str(tmp_path), p) for p in rel]
    one = _infer(chain, "paddle", "--input", chain["images"][1], "--topk", "2")
    assert len(one) == 1 and len(one[0]["topk"]) == 2
    assert one[0]["topk"][0]["class_id"] == by_list[1]["topk"][0]["class_id"]
    # without -c: preprocessing and labels from the export's export_meta.json / labels.txt
    bare = _infer(chain, "onnx", "--model-dir", chain["dir"], "--input", chain["images"][1], config=False)
    assert bare[0]["topk"][0]["class_id"] == one[0]["topk"][0]["class_id"]
    assert bare[0]["topk"][0]["label"] is not None
    r = run_tool("infer.py", "--model-dir", chain["dir"], "--input", chain["images"][1])
    # the default backend is auto: onnxruntime when the export has inference.onnx (it has here)
    assert r.returncode == 0 and "backend: onnx (auto)" in r.stdout
    assert os.path.basename(chain["images"][1]) in r.stdout and one[0]["topk"][0]["label"] in r.stdout


def _fails(chain, *args, config=True):
    if config:
        args = ("-c", "configs/demo.yaml", *o_args(chain["overrides"]), *args)
    r = run_tool("infer.py", *args, env={"PPMOBILENET_LITE_PYTHON": chain["lite"].python})
    assert r.returncode != 0
    return r.stderr


@pytest.mark.slow
def test_bad_inputs_name_the_file(chain, tmp_path):
    missing = str(tmp_path / "nope.png")
    assert missing in _fails(chain, "--input", missing)
    notimg = tmp_path / "fake.png"
    notimg.write_text("not an image")
    assert "fake.png" in _fails(chain, "--input", str(notimg))
    lst = tmp_path / "l.txt"
    lst.write_text(f"{chain['images'][0]}\nmissing/one.png\n")
    err = _fails(chain, "--input", str(lst))
    assert "l.txt:2" in err and "one.png" in err
    broken = tmp_path / "broken"
    shutil.copytree(chain["dir"], broken)
    os.remove(broken / "inference.pdiparams")
    err = _fails(chain, "--model-dir", str(broken), "--input", chain["images"][0])
    assert "inference.pdiparams is missing" in err
    bad_labels = write_labels(str(tmp_path / "five.txt"), n=5)
    err = _fails(chain, "--labels", bad_labels, "--input", chain["images"][0])
    assert "five.txt" in err and "5 labels" in err
    trunc = tmp_path / "t_x86.nb"
    trunc.write_bytes(open(os.path.join(chain["dir"], "lite", "mobilenet_v1_x86.nb"), "rb").read()[:5000])
    err = _fails(chain, "--backend", "lite", "--nb", str(trunc), "--input", chain["images"][0])
    assert "t_x86.nb" in err and "truncated" in err


@pytest.mark.slow
def test_end_to_end_train_export_lite_infer(tmp_path):
    """configs/demo.yaml trained briefly for real, exported with Lite x86 + ONNX, then every
    backend classifies the same held-out PNGs alike."""
    lite = lite_or_skip()
    onnx_or_skip()
    out = tmp_path / "run"
    train = ["Global.epochs=2", f"Global.output_dir={out}", "Global.use_visualdl=False",
             "Global.save_interval=2", "DataLoader.Train.loader.num_workers=0",
             "DataLoader.Eval.loader.num_workers=0"]
    r = run_tool("train.py", "-c", "configs/demo.yaml", *o_args(train), timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    weights = str(out / "best_model.pdparams")
    assert os.path.isfile(weights)
    make_digit_images(str(tmp_path / "images"))
    export = train + [EVAL_TRANSFORMS, f"Global.pretrained_model={weights}",
                      f"Global.save_inference_dir={out / 'inference'}"]
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(export), "--lite", "x86", "--onnx",
                 env={"PPMOBILENET_LITE_PYTHON": lite.python})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Paddle Lite x86 .nb vs Paddle Inference" in r.stdout
    assert os.path.isfile(out / "inference" / "labels.txt")  # the demo's own label file travelled
    tops, scores = {}, {}
    for backend in ("paddle", "dygraph", "lite", "onnx"):
        r = run_tool("infer.py", "-c", "configs/demo.yaml", *o_args(export), "--backend", backend,
                     "--input", str(tmp_path / "images"), "--json",
                     env={"PPMOBILENET_LITE_PYTHON": lite.python})
        assert r.returncode == 0, (backend, r.stderr[-3000:])
        res = json.loads(r.stdout)["results"]
        tops[backend] = [x["topk"][0]["class_id"] for x in res]
        scores[backend] = np.array([x["topk"][0]["score"] for x in res])
        assert np.abs(scores[backend] - scores["paddle"]).max() <= 1e-4, backend
        assert all(x["topk"][0]["label"] is not None for x in res)
    assert len({tuple(t) for t in tops.values()}) == 1, tops


@pytest.mark.parametrize("backend", ["onnx", "paddle"])
def test_default_threads_one_for_a_small_call_all_cores_for_a_large_one(chain, backend, monkeypatch):
    """Without a thread count, a call under SMALL_CALL_MACS runs on one thread (sharing it costs
    more than it saves) and a larger one on all cores; the results do not depend on it. The
    process is given 4 cores (its CPU affinity as the OS reports it), so "all cores" differs
    from one on any machine, a 1-core one included."""
    from ppmobilenet.cpu import available_cores
    from ppmobilenet.deploy.meta import read_meta
    from ppmobilenet.deploy.predictors import SMALL_CALL_MACS, create_predictor
    from ppmobilenet.models import build_model_from_arch
    from ppmobilenet.models.summary import count_macs
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert available_cores() == 4
    macs = read_meta(chain["dir"])["macs_per_image"]
    arch = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}
    assert macs == count_macs(build_model_from_arch(arch), 64)      # the demo model at 64x64
    small, large = 1, SMALL_CALL_MACS // macs + 1                     # batch sizes either side
    assert small * macs < SMALL_CALL_MACS <= large * macs
    x = np.random.RandomState(0).rand(large, 3, 64, 64).astype("float32")
    p = create_predictor(backend, export_dir=chain["dir"])
    runtimes = p._sessions if backend == "onnx" else p._runtimes
    assert (p.threads_for_batch(small), p.threads_for_batch(large)) == (1, 4)
    one = p.predict(x[:small])
    assert set(runtimes._made) == {1}
    many = p.predict(x)
    assert set(runtimes._made) == {1, 4}
    if backend == "onnx":                 # the sessions were made with those counts
        assert {t: s.get_session_options().intra_op_num_threads for t, s in runtimes._made.items()} == \
            {1: 1, 4: 4}
    np.testing.assert_allclose(one, many[:small], atol=1e-5)
    fixed = create_predictor(backend, export_dir=chain["dir"], threads=2)  # the user's choice
    fixed.predict(x[:small])
    fixed.predict(x)
    assert set((fixed._sessions if backend == "onnx" else fixed._runtimes)._made) == {2}
