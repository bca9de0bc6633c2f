"""The body of tools/benchmark.py: arguments, the sections in order, the report, the exit code.

Exit codes: 0 every engine produced its numbers and the engines agree; 1 a check failed (the
message and the JSON's "problems" say which engine, model and batch); 2 bad arguments.
"""
import argparse
import json
import os
import sys
import time

from ppmobilenet.cpu import available_cores

from . import report, specs
from .models import DEMO_MODELS, REGISTRY

SECTIONS = ("reader", "int8", "inference", "training")
REQUIRE_ENV = {"lite-x86": "PPMOBILENET_REQUIRE_LITE", "onnxruntime": "PPMOBILENET_REQUIRE_ONNX",
               "int8-onnxruntime": "PPMOBILENET_REQUIRE_ONNX", "torch": "PPMOBILENET_REQUIRE_TORCH"}


def parser(doc):
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CI check (< 2 min): the demo-sized model, every engine, 2 short rounds; "
                        "verifies that each engine gives numbers and that the engines agree")
    p.add_argument("--out", default=os.path.join("output", "benchmark"),
                   help="folder for results.json, results.md, results.png and work files")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma list of {', '.join(SECTIONS)} [all; --quick: inference,training]")
    p.add_argument("--models", default=",".join(REGISTRY),
                   help="registry models timed at --size (plus the demo model at 64 when it is "
                        f"trained here or given): {', '.join(REGISTRY)}")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--engines", default=",".join(specs.DEFAULT_INFERENCE),
                   help=f"inference engines: {', '.join(specs.INFERENCE_FAMILIES)}")
    p.add_argument("--threads", default=None,
                   help="thread counts of the Paddle Inference / ONNX Runtime rows [1,<cores>]")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per batch size")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per engine first")
    p.add_argument("--target-s", type=float, default=0.35, help="seconds per engine per round")
    p.add_argument("--gap-s", type=float, default=0.25,
                   help="pause after each engine's turn (lets OpenMP threads stop spinning)")
    p.add_argument("--train-engines", default=",".join(specs.DEFAULT_TRAIN),
                   help=f"training variants: {', '.join(specs.TRAIN_VARIANTS)}")
    p.add_argument("--train-cases", default="v1_x1.0@224,demo@64",
                   help="model@size pairs for training throughput (batch --train-batch)")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-rounds", type=int, default=5)
    p.add_argument("--demo-weights", default=None,
                   help="a trained configs/demo.yaml model (.pdparams) for the INT8 accuracy "
                        "and the demo rows [trained by the reader section]")
    p.add_argument("--demo-x1-weights", default=None,
                   help="the same config trained with Arch.scale=1.0 [trained by the int8 section]")
    p.add_argument("--demo-epochs", type=int, default=10)
    p.add_argument("--reader-images-224", type=int, default=320,
                   help="training images in the 224x224 reader-cost run")
    p.add_argument("--calib-images", type=int, default=128, help="INT8 calibration images (>= 100)")
    p.add_argument("--gpu", action="store_true",
                   help="only the GPU script (ppmobilenet/bench/gpu.py): training fp32 / AMP O1 at "
                        "batch 256 and Paddle Inference at batch 1 / 64; needs a CUDA paddle")
    p.add_argument("--lite-python", default=None,
                   help="Python with paddlelite [$PPMOBILENET_LITE_PYTHON, the provisioned venv]")
    return p


def _options(a):
    quick = a.quick
    batches = [int(b) for b in a.batches.split(",") if b]
    sections = [s for s in a.sections.split(",") if s]
    if quick and a.sections == ",".join(SECTIONS):
        sections = ["inference", "training"]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"--sections: unknown {bad}; choose from {', '.join(SECTIONS)}")
    if a.calib_images < 100:
        raise ValueError("--calib-images: the INT8 goal asks for at least 100 calibration images")
    threads = [int(t) for t in a.threads.split(",")] if a.threads else \
        ([1] if quick else specs.thread_counts())
    return {
        "quick": quick, "sections": sections, "batches": batches,
        "engines": [e for e in a.engines.split(",") if e],
        "threads": threads, "train_threads": available_cores(),
        "rounds": 2 if quick else a.rounds, "warmup": 1 if quick else a.warmup,
        "target_s": 0.05 if quick else a.target_s, "gap_s": 0.0 if quick else a.gap_s,
        "train_engines": [e for e in a.train_engines.split(",") if e],
        "train_rounds": 1 if quick else a.train_rounds, "train_target_s": 0.0,
        "calib_images": a.calib_images, "demo_epochs": a.demo_epochs,
        "reader_images_224": a.reader_images_224, "lite_python": a.lite_python,
        "lite": "lite-x86" in a.engines,
    }


def _lite_python(explicit, log):
    """The Lite interpreter for the lite-x86 rows, or None (the rows are then skipped)."""
    try:
        from ppmobilenet.deploy import find_lite_python
        rt = find_lite_python(explicit)
        return rt.python
    except Exception as e:
        log(f"lite: {str(e).splitlines()[0]}")
        return None


def main(doc, argv=None):
    # Before paddle is imported here (exports run in this process): the project's own start-up.
    from ppmobilenet.cpu import configure_cpu
    configure_cpu()
    a = parser(doc).parse_args(argv)
    try:
        opts = _options(a)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = lambda m: print(m, flush=True)  # noqa: E731
    out = os.path.abspath(a.out)
    if a.gpu:
        from .gpu import run_gpu
        try:
            run_gpu(out, log=log)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    work = os.path.join(out, "work")
    os.makedirs(work, exist_ok=True)
    from .machine import load_average, machine_info
    t0 = time.time()
    results = {"command": "python tools/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "quick": opts["quick"], "machine": machine_info(),
               "settings": {k: v for k, v in opts.items()}, "problems": []}
    log(f"benchmark: {results['machine']['cpu_model']}, {results['machine']['cores_available']} "
        f"cores, load {results['machine']['load_average_start']}; output in {out}")
    lite_python = _lite_python(opts["lite_python"], log) if opts["lite"] else None
    opts["lite_python"] = lite_python
    if opts["lite"] and not lite_python:
        opts["engines"] = [e for e in opts["engines"] if e != "lite-x86"]
        opts["lite"] = False
        results.setdefault("skipped", {})["lite-x86"] = "Paddle Lite is unavailable"
    from .procs import BenchError
    from .run import inference_model, int8_accuracy, reader_cost, train_demo, training
    trained = {k: w for k, w in (("demo", a.demo_weights), ("demo_x1.0", a.demo_x1_weights)) if w}
    try:
        if "reader" in opts["sections"]:
            try:
                results["reader"] = reader_cost(opts, work, log)
                trained.setdefault("demo", results["reader"]["demo"]["weights"])
            except BenchError as e:
                results["problems"].append(f"reader: {e}")
        if "int8" in opts["sections"]:
            if "demo_x1.0" not in trained:
                try:
                    run = train_demo("demo_x1.0", opts, work, log)
                    results.setdefault("reader", {})["demo_x1.0"] = run
                    trained["demo_x1.0"] = run["weights"]
                except BenchError as e:
                    results["problems"].append(f"int8: training demo_x1.0: {e}")
            results["int8_accuracy"] = {}
            for key, w in trained.items():
                try:
                    results["int8_accuracy"][key] = int8_accuracy(key, w, opts, work, log,
                                                                  lite=opts["lite"] and key == "demo")
                except (BenchError, RuntimeError) as e:
                    results["problems"].append(f"int8 accuracy {key}: {e}")
        if "inference" in opts["sections"]:
            results["inference"] = []
            demos = ["demo"] if opts["quick"] else list(trained)
            for key in demos:
                results["inference"].append(inference_model(key, DEMO_MODELS[key], 64, opts, work,
                                                             log, weights=trained.get(key)))
            if not opts["quick"]:
                for key in [m for m in a.models.split(",") if m]:
                    if key not in REGISTRY:
                        raise ValueError(f"--models: unknown {key!r}; choose from {', '.join(REGISTRY)}")
                    results["inference"].append(inference_model(key, REGISTRY[key], a.size, opts,
                                                                 work, log))
        if "training" in opts["sections"]:
            cases = [("demo", DEMO_MODELS["demo"], 64, 8)] if opts["quick"] else _train_cases(a)
            results["training"] = training(cases, opts, work, log)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results["load_average_end"] = load_average()
    results["wall_s"] = time.time() - t0
    results["goals"] = report.goals(results)
    results["problems"] += report.checks(results) + _required_missing(results)
    _write(out, results, log)
    if results["problems"]:
        log(f"benchmark: {len(results['problems'])} problem(s):")
        for p in results["problems"]:
            log(f"  - {p.splitlines()[0]}")
        return 1
    log(f"benchmark: all engines produced numbers and agree ({results['wall_s']:.0f} s)")
    return 0


def _train_cases(a):
    cases = []
    for item in [c for c in a.train_cases.split(",") if c]:
        key, _, size = item.partition("@")
        arch = DEMO_MODELS.get(key) or REGISTRY.get(key)
        if arch is None or not size.isdigit():
            raise ValueError(f"--train-cases: {item!r} is not model@size with a model from "
                             f"demo, {', '.join(REGISTRY)}")
        cases.append((key, arch, int(size), a.train_batch))
    return cases


def _required_missing(results):
    """A skipped engine is a failure where the environment says it must be there (CI)."""
    problems = []
    skipped = dict(results.get("skipped") or {})
    for sec in ("inference", "training"):
        for r in results.get(sec) or []:
            skipped.update(r.get("skipped") or {})
    for name, why in skipped.items():
        var = REQUIRE_ENV.get(name)
        if var and os.environ.get(var) == "1":
            problems.append(f"engine {name} was skipped but {var}=1: {why}")
    return problems


def _write(out, results, log):
    from ppmobilenet.deploy.fileio import write_json, write_text
    png = report.plot(results, os.path.join(out, "results.png"), log=log) \
        if not results["quick"] else None
    write_json(os.path.join(out, "results.json"), results)
    write_text(os.path.join(out, "results.md"), report.markdown(results, png))
    log(f"wrote {os.path.join(out, 'results.json')} and results.md" + (" and results.png" if png else ""))
