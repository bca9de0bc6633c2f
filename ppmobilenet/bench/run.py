"""One benchmark run: the sections in order, the goals, the checks, results.json / .md / .png."""
import os
import time

from ppmobilenet.deploy import find_lite_python
from ppmobilenet.io import atomic_write_json, atomic_write_text

from . import report, sections, specs
from .machine import machine_info
from .procs import BenchError

# A skipped engine is a failure where the environment says it must be there (CI).
REQUIRE_ENV = {"lite-x86": "PPMOBILENET_REQUIRE_LITE", "onnxruntime": "PPMOBILENET_REQUIRE_ONNX",
               "int8-onnxruntime": "PPMOBILENET_REQUIRE_ONNX", "torch": "PPMOBILENET_REQUIRE_TORCH"}


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
    if "reader" in opts["sections"]:
        try:
            res["reader"] = sections.reader_cost(opts, work, log)
            trained.setdefault("demo", res["reader"]["demo"]["weights"])
        except BenchError as e:
            res["problems"].append(f"reader: {e}")
    if "int8" in opts["sections"]:
        if "demo_x1.0" not in trained:
            try:
                run = res.setdefault("reader", {})["demo_x1.0"] = sections.train_run("demo_x1.0", [], opts,
                                                                                     work, log)
                trained["demo_x1.0"] = run["weights"]
            except BenchError as e:
                res["problems"].append(f"int8: training demo_x1.0: {e}")
        res["int8_accuracy"] = {}
        for key, w in trained.items():
            try:
                res["int8_accuracy"][key] = sections.int8_accuracy(key, w, opts, work, log)
            except Exception as e:  # the message names the model; the other sections go on
                res["problems"].append(f"int8 accuracy {key}: {e}")
    if "inference" in opts["sections"]:
        models = [(k, specs.DEMO_MODELS[k], 64) for k in (["demo"] if opts["quick"] else trained)]
        models += [] if opts["quick"] else [(k, specs.REGISTRY[k], opts["size"]) for k in opts["models"]]
        res["inference"] = [sections.inference_model(k, arch, size, opts, work, log, trained.get(k))
                            for k, arch, size in models]
    if "training" in opts["sections"]:
        res["training"] = sections.training(opts["train_cases"], opts, work, log)
    res.update(load_average_end=list(os.getloadavg()), wall_s=time.time() - t0, goals=report.goals(res))
    res["problems"] += report.checks(res) + [
        f"engine {name} was skipped but {REQUIRE_ENV[name.split('+')[0]]}=1: {why}"
        for r in res.get("inference", []) + res.get("training", []) for name, why in r["skipped"].items()
        if os.environ.get(REQUIRE_ENV.get(name.split("+")[0], ""), "") == "1"]
    png = None if opts["quick"] else report.plot(res, os.path.join(out, "results.png"), log=log)
    atomic_write_json(os.path.join(out, "results.json"), res)
    atomic_write_text(os.path.join(out, "results.md"), report.markdown(res, png))
    log(f"wrote {os.path.join(out, 'results.json')} and results.md" + (" and results.png" if png else ""))
    for problem in res["problems"]:
        log(f"  - PROBLEM: {problem.splitlines()[0]}")
    log(f"benchmark: {len(res['problems'])} problem(s)" if res["problems"] else
        f"benchmark: all engines produced numbers and agree ({res['wall_s']:.0f} s)")
    return res["problems"]
