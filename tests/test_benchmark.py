"""tools/benchmark.py and the INT8 export: every engine gives numbers and the engines agree
(`--quick`, a real subprocess, as CI runs it); the parts it relies on checked one by one: the
engine processes and their errors, output / loss agreement, the goal ratios, the PyTorch peer
computing Paddle's numbers, Lite's weight-rounding emulation, and `tools/export.py --int8` +
`tools/infer.py --int8`. No timing is asserted anywhere: numbers belong in docs/benchmarks.md."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deploy_helpers import EVAL_TRANSFORMS, make_weights, o_args, onnx_or_skip, run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--engine"]


def _have(module):
    from importlib.util import find_spec
    return find_spec(module) is not None


def _required(var):
    return os.environ.get(var) == "1"


def torch_or_skip():
    if not _have("torch"):
        if _required("PPMOBILENET_REQUIRE_TORCH"):
            pytest.fail("PPMOBILENET_REQUIRE_TORCH=1 but torch is not installed")
        pytest.skip("PyTorch is not installed (pip install 'ppmobilenet[bench]')")


# ---------------------------------------------------------------- the CI run

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--quick",
                        "--out", out], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert os.path.isfile(os.path.join(out, "results.json")), r.stdout[-4000:] + r.stderr[-4000:]
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "results": results,
            "out": out}


def _expected(res, engines, optional):
    """The engines that must have run: all of them, but an optional one whose package is missing
    only when the environment does not require it (CI does: there a missing package fails); such
    an engine must then be listed as skipped, saying what is missing."""
    expected = set(engines)
    for name, (available, var, family, word) in optional.items():
        if not available and not _required(var):
            expected.discard(name)
            assert word in res["skipped"].get(family, "").lower(), (name, res["skipped"])
    return expected


@pytest.mark.slow
def test_quick_every_engine_gives_numbers_and_they_agree(quick):
    assert quick["rc"] == 0, quick["stdout"][-4000:] + quick["stderr"][-4000:]
    res = quick["results"]
    assert res["problems"] == []
    cores = res["machine"]["cores_available"]
    onnx, torch = _have("onnxruntime"), _have("torch")
    # the demo model and one MobileNetV3 (issue 12: its rows), every engine on both
    assert [(m["model"], m["size"]) for m in res["inference"]] == [("demo", 64), ("v3_small_x1.0", 64)]
    for m in res["inference"]:
        _check_inference_row(quick["out"], m, cores, onnx, torch)
    # training: Paddle's variants and the PyTorch peer start from the same weights
    [t] = res["training"]
    expected = _expected(t, {"paddle-unpacked", "paddle-packed", "paddle", "paddle+dp", "torch", "torch+keep-mem"},
                         {v: (torch, "PPMOBILENET_REQUIRE_TORCH", v, "pytorch") for v in ("torch", "torch+keep-mem")})
    if cores < 2:
        expected.discard("paddle+dp")
        assert "paddle+dp" in t["skipped"]
    assert expected <= set(t["engines"]), (sorted(expected - set(t["engines"])), t["skipped"])
    for name, e in t["engines"].items():
        a = t["agreement"][name]
        assert a["ok"], (name, a)
        assert e["batches"]["8"]["throughput"] > 0 and e["memory"]["peak_rss_mib"] > 0, name
    for name in expected - {"paddle+dp"}:
        assert t["agreement"][name]["max_rel_diff"] <= 1e-3, (name, t["agreement"][name])
    if "paddle+dp" in expected:  # launched: one process per core, memory summed over the ranks
        dp = t["engines"]["paddle+dp"]
        assert dp["engine"]["ranks"] == cores
        assert dp["memory"]["peak_rss_mib"] > dp["memory"]["rank0_peak_rss_mib"] > 0
    # issue 13's figures: paired ratios vs the fair peer and the machine's limit, printed and saved
    g = res["goals"]
    if torch:
        [fair] = [r for r in g["ratios"] if r["subject"] == "paddle" and r["best_peer"] == "torch+keep-mem"]
        assert fair["paired"]["rounds"] == 1 and fair["ratio"] > 0
        assert "torch+keep-mem" in quick["stdout"] and "## Goals: ratios" in quick["stdout"]
    assert g["gemm_gflops"] > 0 and "## Training vs the machine's limit" in quick["stdout"]
    limits = {r["engine"]: r for r in g["limits"]}
    assert set(limits) == set(t["engines"])
    macs = t["macs_per_image"]
    assert 3e6 < macs < 4e6  # V1 x0.25 at 64x64: the demo model's 3.4M multiply-adds
    for name, r in limits.items():
        assert r["gflops"] == pytest.approx(t["engines"][name]["batches"]["8"]["throughput"] * 6 * macs / 1e9)
        assert r["of_gemm"] == pytest.approx(r["gflops"] / g["gemm_gflops"])
    md = open(os.path.join(quick["out"], "results.md")).read()
    assert "| paddle-onednn-1t | 1 |" in md and "cores available" in md


def _check_inference_row(out, m, cores, onnx, torch):
    """Every engine timed at batch 1 and 8 with its memory, agreeing with Paddle Inference; the
    thread count each ran with; the default path's backend."""
    lite = "lite-x86" not in m["skipped"]  # paddlelite lives in the Lite interpreter, not here
    expected = _expected(m, {f"dygraph-{cores}t", "paddle-onednn-1t", "paddle-native-1t", "paddle-openvino-1t",
                             "default", "onnxruntime-1t", "int8-onnxruntime-1t", "lite-x86-1t",
                             f"torch-eager-{cores}t"},
                         {"onnxruntime-1t": (onnx, "PPMOBILENET_REQUIRE_ONNX", "onnxruntime", "onnx"),
                          "int8-onnxruntime-1t": (onnx, "PPMOBILENET_REQUIRE_ONNX", "int8-onnxruntime", "onnx"),
                          "lite-x86-1t": (lite, "PPMOBILENET_REQUIRE_LITE", "lite-x86", "lite"),
                          f"torch-eager-{cores}t": (torch, "PPMOBILENET_REQUIRE_TORCH", "torch", "pytorch")})
    assert expected <= set(m["engines"]), (sorted(expected - set(m["engines"])), m["skipped"])
    for name, e in m["engines"].items():
        for batch in ("1", "8"):
            s = e["batches"][batch]
            assert s["throughput"] > 0 and s["latency_ms"] > 0 and len(s["round_ms"]) == 2, (name, batch)
        assert e["memory"]["peak_rss_mib"] > e["memory"]["start_rss_mib"] > 0, name
        a = m["agreement"][name]
        assert a["ok"], (name, a)
        if not name.startswith("int8"):  # INT8 on fresh weights is reported, not judged
            assert a["max_abs_diff"] <= 1e-4 and a["top1_agree"] == 1.0, (name, a)
    # the thread counts each engine ran with: its row's, or for the default path the count
    # tools/infer.py picks per call
    from ppmobilenet.deploy.meta import read_meta
    from ppmobilenet.deploy.predictors import threads_for
    for name, e in m["engines"].items():
        if name != "default":
            assert e["env"]["OMP_NUM_THREADS"] == name.rsplit("-", 1)[1][:-1], (name, e["env"])
    macs = read_meta(_export_dir(out, m))
    for batch in ("1", "8"):
        assert m["engines"]["default"]["batches"][batch]["threads"] == threads_for(
            int(batch), macs.get("macs_per_image"), cores), batch
    assert m["engines"]["default"]["engine"]["backend"] == ("onnx" if _have("onnxruntime") else "paddle")
    # the ONNX Runtime, Lite and PyTorch processes never load Paddle (their memory is their own)
    for name, e in m["engines"].items():
        assert e["engine"]["paddle_loaded"] == (not name.startswith(("onnx", "int8", "lite", "torch"))), name


def _export_dir(out, m):
    return os.path.join(out, "work", "models", f"{m['model']}_{m['size']}", "export")


# ---------------------------------------------------------------- pieces

def test_paired_ratios_compare_round_by_round():
    from ppmobilenet.bench.goals import goals
    from ppmobilenet.bench.report import paired
    # b is 2x slower than a in every round, though both slow down together in round 3
    p = paired([1.0, 1.0, 3.0, 1.0], [2.0, 2.0, 6.0, 2.0])
    assert p == {"median": 2.0, "lo": 2.0, "hi": 2.0, "rounds": 4}
    p = paired([1.0, 1.0, 1.0], [0.5, 1.0, 2.0])
    assert (p["median"], p["lo"], p["hi"]) == (1.0, 0.5, 2.0)
    assert paired([], [1.0]) is None
    res = {"inference": [{"model": "m", "size": 64, "batches": [1], "engines": {
        "default": {"engine": {"backend": "onnx"}, "batches": {"1": {
            "throughput": 100.0, "round_ms": [10.0, 10.0, 12.0], "threads": 1}}},
        "onnxruntime-1t": {"batches": {"1": {"throughput": 100.0, "round_ms": [10.0, 11.0, 12.0]}}},
        "paddle-onednn-1t": {"batches": {"1": {"throughput": 50.0, "round_ms": [5.0, 30.0, 30.0]}}}}}]}
    [row] = goals(res)["ratios"]
    # the twin (same engine, same threads) is noise; the goal compares with the other engines
    assert row["best_peer"] == "onnxruntime-1t" and row["paired_peer"] == "paddle-onednn-1t"
    assert row["paired"]["median"] == 2.5  # rounds: 5/10, 30/10, 30/12
    assert row["twin"] == "onnxruntime-1t" and row["twin_paired"]["median"] == 1.0
    assert row["ratio"] == 1.0 and row["target"] == ">= 1.0"
    # INT8 is compared with fp32 at its own thread count, batch 8 only
    b8 = lambda tp: {"batches": {"8": {"throughput": tp, "round_ms": [8000.0 / tp] * 2}}}  # noqa: E731
    res = {"inference": [{"model": "m", "size": 64, "batches": [1, 8], "engines": {
        "int8-onnxruntime-1t": b8(300.0), "onnxruntime-1t": b8(100.0), "onnxruntime-2t": b8(200.0)}}]}
    rows = goals(res)["ratios"]
    assert [(r["subject"], r["best_peer"], r["ratio"]) for r in rows] == [
        ("int8-onnxruntime-1t", "onnxruntime-1t", 3.0)]
    assert rows[0]["paired"]["median"] == pytest.approx(3.0) and "twin" not in rows[0]
    # training: tools/train.py's path against PyTorch with the same malloc setting
    res = {"training": [{"model": "demo", "size": 64, "batch": 8, "batches": [8], "engines": {
        "paddle": b8(20.0), "torch": b8(10.0), "torch+keep-mem": b8(40.0)}}],
        "reader": {"demo": {"reader_share": 0.02}}, "int8_accuracy": {"demo": {"drop_points": 0.5}}}
    g = goals(res)
    fair = [r for r in g["ratios"] if r["best_peer"] == "torch+keep-mem"]
    assert [(r["subject"], r["ratio"], r["paired"]["median"]) for r in fair] == [("paddle", 0.5, 0.5)]
    assert sorted((r["case"], r["value"]) for r in g["values"]) == [("demo", 0.5), ("demo", 2.0)]


def test_agreement_catches_a_disagreeing_engine():
    from ppmobilenet.bench.agreement import compare_losses, compare_outputs
    rng = np.random.RandomState(0)
    ref = rng.dirichlet(np.ones(10), size=4).astype("float32")
    sure = np.full((2, 10), 0.0125, dtype="float32")
    sure[:, 1], sure[:, 2] = 0.56, 0.35              # fp32 is sure: top-2 margin 0.21 > 0.2
    flipped = sure.copy()
    flipped[:, 1], flipped[:, 2] = 0.43, 0.48        # within INT8_TOL, but another class
    rep = compare_outputs({"paddle-onednn-1t": ref, "onnxruntime-1t": ref + 1e-6,
                           "lite-x86-1t": ref[:, ::-1].copy(), "int8-onnxruntime-1t": ref + 0.01,
                           "bad": np.full_like(ref, np.nan)}, "paddle-onednn-1t")
    assert rep["onnxruntime-1t"]["ok"] and rep["int8-onnxruntime-1t"]["ok"]
    assert not rep["lite-x86-1t"]["ok"] and not rep["bad"]["ok"]
    rep = compare_outputs({"ref": sure, "int8-a": sure - 0.05 * (sure > 0.5),
                           "int8-b": flipped}, "ref")
    assert rep["int8-a"]["ok"] and rep["int8-a"]["sure_flips"] == 0
    assert rep["int8-b"]["max_abs_diff"] <= rep["int8-b"]["tol"] and not rep["int8-b"]["ok"]
    fresh = compare_outputs({"ref": sure, "int8-b": flipped, "int8-nan": flipped * np.nan,
                             "fp32": flipped}, "ref", trained=False)
    assert fresh["int8-b"]["ok"] and not fresh["int8-b"]["judged"]   # reported, not judged
    assert not fresh["int8-nan"]["ok"] and not fresh["fp32"]["ok"]
    losses = compare_losses({"paddle": [2.3, 2.1], "torch": [2.3, 2.1000001], "x": [2.3, 2.5],
                             "y+dp": [2.35, 2.15]}, "paddle")
    assert losses["torch"]["ok"] and not losses["x"]["ok"] and losses["y+dp"]["ok"]


def test_checks_name_missing_numbers_and_failed_engines():
    from ppmobilenet.bench.goals import goals
    from ppmobilenet.bench.report import checks
    res = {"settings": {"batches": [1, 8]}, "inference": [{
        "model": "m", "size": 64, "reference": "a", "skipped": {},
        "errors": {"c": "engine c: loading: boom"},
        "engines": {"a": {"batches": {"1": {"throughput": 10.0}, "8": {"throughput": 20.0}}},
                    "b": {"batches": {"1": {"throughput": 10.0}, "8": {"throughput": 20.0}}},
                    "default": {"batches": {"1": {"throughput": 12.0}}}},
        "batches": [1, 8], "agreement": {"a": {"ok": True}, "default": {
            "ok": False, "max_abs_diff": 0.5, "tol": 1e-4, "why": "max abs diff 0.5 > 0.0001"}}}]}
    problems = checks(res)
    text = "\n".join(problems)
    assert "engine c: loading: boom" in text
    assert "engine default has no throughput at batch 8" in text
    assert "engine default disagrees with a: max abs diff 0.5 > 0.0001" in text
    assert "engine b gave no outputs to compare" in text
    assert len(problems) == 4, problems
    assert goals(res)["ratios"] == []  # "a" is no ORT / Paddle Inference peer


def test_engine_process_reports_a_broken_engine_by_name(tmp_path):
    from ppmobilenet.bench.procs import BenchError, Worker
    w = Worker("onnxruntime-1t", {"kind": "onnx", "path": str(tmp_path / "missing.onnx"),
                                  "inputs": str(tmp_path / "none.npz"), "threads": 1, "cpu": []},
               ENGINE, {"OMP_NUM_THREADS": 1}, str(tmp_path))
    with pytest.raises(BenchError, match=r"engine onnxruntime-1t: loading: .*missing\.onnx") as e:
        w.wait_ready()
    assert "its log" in str(e.value)  # the end of the engine's own output comes with it
    w.kill()
    assert w.proc.poll() is not None


def test_engine_process_times_and_measures_memory(tmp_path):
    onnx_or_skip()
    from ppmobilenet.bench.prepare import export, imagenet_ops
    from ppmobilenet.bench.procs import Worker
    arch = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}
    p = export("t", arch, 32, str(tmp_path), onnx=True, ops=imagenet_ops(32), log=lambda m: None)
    x = np.random.RandomState(0).standard_normal((3, 3, 32, 32)).astype("float32")
    np.savez(tmp_path / "in.npz", x=x)
    w = Worker("onnxruntime-1t", {"kind": "onnx", "path": p["onnx"], "threads": 1, "cpu": [],
                                  "inputs": str(tmp_path / "in.npz")}, ENGINE,
               {"OMP_NUM_THREADS": 1}, str(tmp_path))
    try:
        hello = w.wait_ready()
        assert hello["info"]["backend"] == "onnx" and hello["env"]["OMP_NUM_THREADS"] == "1"
        w.call("prepare", batch=5, warmup=1)  # more than the 3 images: tiled
        t = w.call("time", n=3)[0]
        assert len(t["wall"]) == 3 and all(v > 0 for v in t["wall"])
        w.call("outputs", path=str(tmp_path / "o.npy"))
        out = np.load(tmp_path / "o.npy")
        assert out.shape == (3, 10) and np.allclose(out.sum(1), 1.0, atol=1e-5)
    finally:
        mem = w.close()
    assert mem["peak_rss_mib"] > mem["start_rss_mib"] > 0
    assert w.proc.returncode == 0


def test_torch_peer_is_the_same_network():
    """Paddle's weights loaded into the PyTorch peer give Paddle's outputs (eval mode): the
    training comparison is between the same architecture, not a look-alike."""
    torch_or_skip()
    import paddle
    import torch
    from ppmobilenet.bench.prepare import peer_blocks
    from ppmobilenet.bench.torch_peer import build_torch_model, load_paddle_state
    from ppmobilenet.models import build_model_from_arch
    x = np.random.RandomState(1).standard_normal((2, 3, 64, 64)).astype("float32")
    for arch in ({"name": "mobilenet_v1", "class_num": 7, "scale": 0.25, "head": "classic"},
                 {"name": "mobilenet_v1", "class_num": 7, "scale": 0.25, "head": "demo"},
                 {"name": "mobilenet_v2", "class_num": 7, "scale": 0.5},
                 {"name": "mobilenet_v3_small", "class_num": 7, "scale": 1.0},
                 {"name": "mobilenet_v3_large", "class_num": 7, "scale": 0.75}):
        paddle.seed(0)
        pm = build_model_from_arch(arch)
        pm.eval()
        # fresh V3 weights give outputs of ~1e-7: perturbed weights and BN statistics make
        # every layer count
        rng = np.random.RandomState(0)
        state = {k: (np.abs(rng.standard_normal(v.shape)) + 0.5 if k.endswith("_variance")
                     else v.numpy() + 0.05 * rng.standard_normal(v.shape)).astype("float32")
                 for k, v in pm.state_dict().items()}
        pm.set_state_dict(state)
        tm = load_paddle_state(build_torch_model(arch, peer_blocks(arch)), state).eval()
        with torch.no_grad():
            got = tm(torch.from_numpy(x)).numpy()
        ref = pm(paddle.to_tensor(x)).numpy()
        assert np.abs(ref).max() > 0.1, arch
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), arch
        n_paddle = sum(int(np.prod(p.shape)) for p in pm.parameters() if p.trainable)
        assert n_paddle == sum(p.numel() for p in tm.parameters()), arch
    with pytest.raises(RuntimeError, match="Unexpected key"):  # a Paddle tensor with no counterpart
        load_paddle_state(build_torch_model(arch, peer_blocks(arch)), dict(state, extra=np.zeros(3, "float32")))


def test_lite_weight_rounding_emulation():
    from ppmobilenet.bench.prepare import fake_quant_weights
    rng = np.random.RandomState(0)
    conv = rng.standard_normal((8, 4, 3, 3)).astype("float32") * np.arange(1, 9).reshape(8, 1, 1, 1)
    fc = rng.standard_normal((16, 5)).astype("float32")
    bn = rng.standard_normal(8).astype("float32")
    q = fake_quant_weights({"conv": conv, "fc": fc, "bn": bn})
    assert np.array_equal(q["bn"], bn)
    for w, axis_max in ((conv, np.abs(conv).reshape(8, -1).max(1).reshape(-1, 1, 1, 1)),
                        (fc, np.abs(fc).max(0, keepdims=True))):
        k = "conv" if w is conv else "fc"
        step = axis_max / 127.0
        assert (np.abs(q[k] - w) <= step / 2 + 1e-6).all()       # rounded to the channel's grid
        assert len(np.unique(np.round(q[k] / step).astype(int))) <= 255


def test_cpu_settings_only_where_they_apply():
    from ppmobilenet.cpu import available_cores, cpu_env, cpu_flags, cpu_vendor
    env = {}
    done = cpu_env(env)
    if cpu_vendor() == "AuthenticAMD" and "avx2" in cpu_flags():
        assert env["MKL_DEBUG_CPU_TYPE"] == "5"
    else:
        assert "MKL_DEBUG_CPU_TYPE" not in env
    assert env["OMP_NUM_THREADS"] == done["OMP_NUM_THREADS"] == str(available_cores())
    user = {"MKL_DEBUG_CPU_TYPE": "4", "OMP_NUM_THREADS": "1"}
    assert cpu_env(user) == {} and user["MKL_DEBUG_CPU_TYPE"] == "4"  # never overridden
    launched = {"PADDLE_LOCAL_SIZE": str(available_cores())}  # one process per core
    cpu_env(launched)
    assert launched["OMP_NUM_THREADS"] == "1"
    # mallopt changes the whole process: it is tried in a child, not in this test process
    r = subprocess.run([sys.executable, "-c", "from ppmobilenet.cpu import keep_freed_memory as k; "
                        "print(k())"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    import platform
    assert r.stdout.strip() == str(sys.platform.startswith("linux") and
                                   platform.libc_ver()[0] == "glibc"), r.stderr


# ---------------------------------------------------------------- INT8 export

@pytest.mark.slow
def test_export_int8_and_infer_int8(tmp_path):
    onnx_or_skip()
    weights = make_weights(str(tmp_path / "w.pdparams"), scale=0.5, seed=1)
    out = str(tmp_path / "inference")
    ov = [EVAL_TRANSFORMS, f"Global.pretrained_model={weights}", f"Global.save_inference_dir={out}",
          "Arch.scale=0.5"]
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(ov), "--int8")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "128 calibration images" in r.stdout and "INT8 ONNX Runtime vs fp32" in r.stdout
    meta = json.load(open(os.path.join(out, "export_meta.json")))
    assert meta["int8"]["file"] == "inference_int8.onnx" and meta["int8"]["calibration_images"] == 128
    assert meta["onnx"]["file"] == "inference.onnx"  # --int8 implies --onnx
    q = os.path.join(out, "inference_int8.onnx")
    assert os.path.getsize(q) < 0.5 * os.path.getsize(os.path.join(out, "inference.onnx"))
    import onnx
    graph = onnx.load(q).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    # the stem (first conv, first depthwise conv) stays float; every later Conv reads int8 weights
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert [n.input[1] in dequantized for n in convs] == [False, False] + [True] * (len(convs) - 2)
    assert "float stem: " in r.stdout
    # the same real digits through fp32 and int8: same top-1 on (nearly) all
    from ppmobilenet.data.demo import prepare_demo_digits
    val = os.path.join(prepare_demo_digits()["root"], "val", "7")
    runs = {}
    for extra in ((), ("--int8",)):
        r = run_tool("infer.py", "--model-dir", out, "--input", val, "--json", *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[extra] = json.loads(r.stdout)
    assert runs[()]["backend"] == "onnx" and runs[()]["requested"] == "auto"
    assert runs[("--int8",)]["int8"] is True
    fp32, int8 = runs[()]["results"], runs[("--int8",)]["results"]
    assert len(fp32) == len(int8) > 30
    # fresh weights are unsure on real digits; where fp32 is sure (top-2 margin > 0.2), int8
    # must pick the same class, and its scores move by rounding only
    sure = [(a, b) for a, b in zip(fp32, int8) if a["topk"][0]["score"] - a["topk"][1]["score"] > 0.2]
    assert len(sure) >= 10
    for a, b in sure:
        assert a["topk"][0]["class_id"] == b["topk"][0]["class_id"], (a, b)
        assert abs(a["topk"][0]["score"] - b["topk"][0]["score"]) <= 0.1, (a, b)


def test_export_int8_refuses_too_few_calibration_images(tmp_path):
    onnx_or_skip()
    weights = make_weights(str(tmp_path / "w.pdparams"))
    out = str(tmp_path / "inference")
    ov = [EVAL_TRANSFORMS, f"Global.pretrained_model={weights}", f"Global.save_inference_dir={out}"]
    r = run_tool("export.py", "-c", "configs/demo.yaml", *o_args(ov), "--int8",
                 "--calibration-images", "50")
    assert r.returncode == 1
    assert "at least 100" in r.stderr and "got 50" in r.stderr
    assert not os.path.exists(os.path.join(out, "inference_int8.onnx"))


def test_gpu_rows_need_a_gpu(tmp_path):
    """--gpu runs the GPU rows (Paddle Inference and training on the card) or, without a CUDA
    paddle and a device, stops at once saying so (exit 1, nothing measured)."""
    import paddle
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--gpu", "--out",
                        str(tmp_path), "--rounds", "1", "--train-rounds", "1"], capture_output=True, text=True,
                       timeout=1800, cwd=ROOT)
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        res = json.load(open(tmp_path / "results.json"))
        assert set(res["inference"][0]["engines"]) == {"paddle-gpu-1t"}
        assert set(res["training"][0]["engines"]) == {"paddle-gpu", "paddle-gpu+amp"}
        assert res["training"][0]["batch"] == 256
    else:
        assert r.returncode == 1 and "--gpu: this paddle is not a CUDA build or sees no GPU" in r.stderr
        assert not os.path.exists(tmp_path / "results.json")
