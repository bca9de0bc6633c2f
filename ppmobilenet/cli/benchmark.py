"""Benchmark every engine side by side: inference latency / throughput / peak memory (dygraph,
Paddle Inference with and without oneDNN at 1 and all cores, Paddle Lite x86 .nb, ONNX Runtime,
INT8 ONNX Runtime, the project's default path, PyTorch eager as a peer), training img/s against
PyTorch eager, reader cost in real training runs, and INT8 accuracy on the demo digits.

  python tools/benchmark.py --quick            # CI: 2-3 min; numbers from every engine + agreement
  python tools/benchmark.py                    # everything (about 30-40 minutes on 2 cores)
  python tools/benchmark.py --sections inference --models v1_x1.0 --engines paddle-onednn,onnxruntime,default

Writes <out>/results.json and results.md (the tables docs/benchmarks.md shows).
PyTorch is optional: pip install 'ppmobilenet[bench]'. Lite rows need the Lite interpreter
(tools/provision_lite.py).

Exit codes: 0 every engine produced its numbers and the engines agree; 1 a check failed (the
message and results.json's "problems" say which engine, model and batch); 2 bad arguments.
"""
import argparse
import json
import os
import sys

from .common import command_parser, run

SECTIONS = ("reader", "int8", "inference", "training")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--engine"]:  # one engine's process, started by the benchmark itself
        return _engine_process(json.loads(argv[1]))
    return run(lambda: _benchmark(argv))


def _engine_process(spec):
    """The CPU settings this engine is measured with come before its library is imported."""
    from ..bench import worker
    from ..cpu import cpu_env, keep_freed_memory
    base = worker.maxrss_kb()
    if "env" in spec["cpu"]:
        cpu_env()
    if "malloc" in spec["cpu"]:
        keep_freed_memory()

    def make():  # the ONNX Runtime and PyTorch processes never load Paddle
        if spec["kind"].startswith("torch"):
            from ..bench import torch_peer as module
        elif spec["kind"] == "onnx":
            from ..bench import onnx_engine as module
        else:
            from ..bench import engines as module
        return module.make(spec)
    return worker.serve(spec, make, base)


def _listed(parse_one):
    """An argparse type: a comma list, each item through parse_one (a bad item: exit 2, before any run)."""
    return lambda text: [parse_one(x) for x in text.split(",") if x]


def _one_of(known):
    def parse(name):
        if name not in known:
            raise argparse.ArgumentTypeError(f"unknown {name!r}; choose from {', '.join(known)}")
        return name
    return parse


def _parser(specs):
    models = {**specs.DEMO_MODELS, **specs.REGISTRY}

    def case(item):  # model@size[:batch]
        key, _, rest = item.partition("@")
        size, _, batch = rest.partition(":")
        if key not in models or not size.isdigit() or not (batch.isdigit() or batch == ""):
            raise argparse.ArgumentTypeError(f"{item!r} is not model@size[:batch] with a model from "
                                             f"{', '.join(models)}")
        return key, models[key], int(size), int(batch) if batch else None
    p = command_parser(__doc__)
    add = p.add_argument
    add("--quick", action="store_true", help="CI check (2-3 min): the demo model and MobileNetV3 small at 64x64, "
        "every engine, "
        "2 short rounds; verifies that each engine gives numbers and that the engines agree")
    add("--out", default=os.path.join("output", "benchmark"),
        help="folder for results.json, results.md and work files")
    add("--sections", type=_listed(_one_of(SECTIONS)),
        help=f"{', '.join(SECTIONS)} [all; --quick: inference,training]")
    add("--models", type=_listed(_one_of(specs.REGISTRY)), default=list(specs.REGISTRY),
        help="registry models timed at --size (and the demo model at 64, trained here or given)")
    add("--size", type=int, default=224)
    add("--batches", type=_listed(int), default=[1, 8])
    add("--engines", type=_listed(_one_of(specs.FAMILIES)), default=list(specs.DEFAULT_INFERENCE),
        help=f"inference engines: {', '.join(specs.FAMILIES)}")
    add("--threads", type=_listed(int),
        help="thread counts of the Paddle Inference / ONNX Runtime rows [1,<cores>]")
    add("--rounds", type=int, default=7, help="interleaved rounds per batch size")
    add("--warmup", type=int, default=3, help="untimed runs per engine first")
    add("--target-s", type=float, default=0.35, help="seconds per engine per round")
    add("--gap-s", type=float, default=0.25,
        help="pause after each engine's turn (OpenMP threads stop spinning)")
    add("--train-engines", type=_listed(_one_of(specs.TRAIN_VARIANTS)), default=list(specs.DEFAULT_TRAIN),
        help=f"training variants: {', '.join(specs.TRAIN_VARIANTS)}")
    add("--train-cases", type=_listed(case), default="v1_x1.0@224,demo@64",
        help="model@size[:batch] for training throughput [batch: --train-batch]")
    add("--train-batch", type=int, help="[32; the demo models: 64, configs/demo.yaml's batch]")
    add("--train-rounds", type=int, default=5)
    add("--demo-weights", help="a trained configs/demo.yaml model for the INT8 accuracy and the demo rows "
        "[trained by the reader section]")
    add("--demo-x1-weights", help="the same config trained with Arch.scale=1.0 [trained by the int8 section]")
    add("--demo-epochs", type=int, default=10)
    add("--calib-images", type=int, default=128, help="INT8 calibration images (>= 100)")
    add("--gpu", action="store_true", help="the GPU rows only: MobileNetV1 x1.0 at 224, training fp32 / "
        "AMP O1 at batch 256, Paddle Inference at batch 1 / 64; needs a CUDA paddle")
    add("--lite-python", help="Python with paddlelite [$PPMOBILENET_LITE_PYTHON, the provisioned venv]")
    return p


def _benchmark(argv):
    from ..bench import specs
    p = _parser(specs)
    a, log = p.parse_args(argv), lambda m: print(m, flush=True)
    if a.calib_images < 100:
        p.error("--calib-images: the INT8 goal asks for at least 100 calibration images")
    from ..bench.run import run_benchmark
    q = a.quick  # the demo model and one V3, one thread, 2 short rounds; training at batch 8, one round
    opts = dict(vars(a), sections=a.sections or (["inference", "training"] if q else list(SECTIONS)),
                threads=a.threads or ([1] if q else specs.thread_counts()),
                rounds=2 if q else a.rounds, warmup=1 if q else a.warmup, target_s=0.05 if q else a.target_s,
                gap_s=0.0 if q else a.gap_s, train_rounds=1 if q else a.train_rounds)
    if a.gpu:
        import paddle
        if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
            from ..bench.procs import BenchError
            raise BenchError("--gpu: this paddle is not a CUDA build or sees no GPU "
                             f"(compiled with CUDA: {paddle.is_compiled_with_cuda()})")
        opts.update(specs.GPU)
    opts["train_cases"] = [("demo", specs.DEMO_MODELS["demo"], 64, 8)] if q else \
        [(k, arch, size, b or opts["train_batch"] or (64 if k in specs.DEMO_MODELS else 32))
         for k, arch, size, b in opts["train_cases"]]
    problems = run_benchmark(opts, os.path.abspath(a.out), "python tools/benchmark.py " + " ".join(argv), log)
    return 1 if problems else 0
