"""One benchmark run: the machine, the sections in order, the goals, the checks, results.json
and results.md."""
import datetime
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import distributions

import paddle

from ppmobilenet.cpu import available_cores, cpu_flags, cpu_vendor
from ppmobilenet.deploy import find_lite_python
from ppmobilenet.io import atomic_write_json, atomic_write_text

from . import goals, report, sections, specs
from .procs import BenchError

# A skipped engine is a failure where the environment says it must be there (CI).
REQUIRE_ENV = {"lite-x86": "PPMOBILENET_REQUIRE_LITE", "onnxruntime": "PPMOBILENET_REQUIRE_ONNX",
               "int8-onnxruntime": "PPMOBILENET_REQUIRE_ONNX", "torch": "PPMOBILENET_REQUIRE_TORCH"}


def _output(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info():
    """What the numbers were measured on: CPU model and cores, memory, load, versions, GPU, date."""
    cpu = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in _output(["lscpu"]).splitlines())}
    with open("/proc/meminfo") as f:
        memory_gib = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    installed = {(d.metadata["Name"] or "").lower(): d.version for d in distributions()}
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_model": cpu.get("Model name") or platform.processor(), "cpu_vendor": cpu_vendor(),
            "cores_available": available_cores(), "threads_per_core": cpu.get("Thread(s) per core"),
            "isa": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "fma"}),
            "hypervisor": cpu.get("Hypervisor vendor"), "memory_gib": memory_gib,
            "load_average_start": list(os.getloadavg()), "python": sys.version.split()[0],
            "platform": platform.platform(), "gpu": _output(["nvidia-smi", "-L"]).strip() or None,
            "versions": {m: installed.get(m) for m in ("paddlepaddle", "onnxruntime", "paddle2onnx", "onnx",
                                                       "torch", "numpy")}}


def gemm_gflops(n=1024, repeats=5):
    """fp32 GEMM throughput on all cores (this process runs with configure_cpu's settings): the
    machine's limit that the training engines are held against. Best of `repeats`."""
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    best = float("inf")
    for _ in range(repeats + 1):
        t = time.perf_counter()
        paddle.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def run_benchmark(opts, out, command, log=print):
    """opts: the command's settings (cli/benchmark.py). -> the problems found (none: all agree)."""
    work, t0 = os.path.join(out, "work"), time.time()
    os.makedirs(work, exist_ok=True)
    res = {"command": command, "quick": opts["quick"], "machine": machine_info(), "settings": dict(opts),
           "problems": []}
    log(f"benchmark: {res['machine']['cpu_model']}, {res['machine']['cores_available']} cores, load "
        f"{res['machine']['load_average_start']}; output in {out}")
    opts = dict(opts, lite=None)  # a LiteRuntime, or why there is none
    if "lite-x86" in opts["engines"]:
        try:
            opts["lite"] = find_lite_python(opts["lite_python"])
            res["settings"]["lite_python"] = opts["lite"].python
        except Exception as e:  # the Lite rows are skipped, saying why
            opts["lite"] = str(e).splitlines()[0]
            log(f"lite: {opts['lite']}")
    trained = {k: w for k, w in (("demo", opts["demo_weights"]), ("demo_x1.0", opts["demo_x1_weights"])) if w}
    # real tools/train.py runs: the reader section's (always) and the int8 section's x1.0 (unless given)
    for key, section in (("demo", "reader"), ("demo_x1.0", "int8")):
        if section in opts["sections"] and (section == "reader" or key not in trained):
            try:
                run = res.setdefault("reader", {})[key] = sections.train_run(key, opts, work, log)
                trained.setdefault(key, run["weights"])
            except BenchError as e:
                res["problems"].append(f"{section}: training {key}: {e}")
    if "int8" in opts["sections"]:
        res["int8_accuracy"] = {}
        for key, w in trained.items():
            try:
                res["int8_accuracy"][key] = sections.int8_accuracy(key, w, opts, work, log)
            except Exception as e:  # the message names the model; the other sections go on
                res["problems"].append(f"int8 accuracy {key}: {e}")
    if "inference" in opts["sections"]:
        # --quick: the demo model and one MobileNetV3 (its blocks through every engine)
        models = [(k, specs.DEMO_MODELS[k], 64) for k in (["demo"] if opts["quick"] else trained)]
        models += [(k, specs.REGISTRY[k], size) for k, size in
                   ([specs.QUICK_V3] if opts["quick"] else [(m, opts["size"]) for m in opts["models"]])]
        res["inference"] = [sections.inference_model(k, arch, size, opts, work, log, trained.get(k))
                            for k, arch, size in models]
    if "training" in opts["sections"]:
        res["machine"]["gemm_gflops"] = gemm_gflops()
        res["training"] = sections.training(opts["train_cases"], opts, work, log)
    res.update(load_average_end=list(os.getloadavg()), wall_s=time.time() - t0, goals=goals.goals(res))
    res["problems"] += report.checks(res) + [
        f"engine {name} was skipped but {REQUIRE_ENV[name.split('+')[0]]}=1: {why}"
        for r in res.get("inference", []) + res.get("training", []) for name, why in r["skipped"].items()
        if os.environ.get(REQUIRE_ENV.get(name.split("+")[0], ""), "") == "1"]
    goal_lines = goals.markdown(res["goals"])
    atomic_write_json(os.path.join(out, "results.json"), res)
    atomic_write_text(os.path.join(out, "results.md"), report.markdown(res, goal_lines))
    log("\n".join(goal_lines))
    log(f"wrote {os.path.join(out, 'results.json')} and results.md")
    for problem in res["problems"]:
        log(f"  - PROBLEM: {problem.splitlines()[0]}")
    log(f"benchmark: {len(res['problems'])} problem(s)" if res["problems"] else
        f"benchmark: all engines produced numbers and agree ({res['wall_s']:.0f} s)")
    return res["problems"]
