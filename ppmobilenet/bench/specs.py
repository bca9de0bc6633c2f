"""What the benchmark runs: the models, the engines and their settings, and the command that
starts each engine's process. A new model or engine is a row in one of these tables (a goal is
one in goals.py)."""
import os
import sys
from importlib.util import find_spec

from ppmobilenet.cpu import available_cores

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
ENGINE = [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--engine"]  # + spec JSON
LITE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")

# key -> Arch: the registry's models at ImageNet's 1000 classes, timed at --size
REGISTRY = {
    "v1_demo_x1.0": {"name": "mobilenet_v1", "class_num": 1000, "scale": 1.0, "head": "demo"},
    **{f"v1_x{s}": {"name": "mobilenet_v1", "class_num": 1000, "scale": s, "head": "classic"}
       for s in (0.25, 0.5, 0.75, 1.0)},
    "v2_x1.0": {"name": "mobilenet_v2", "class_num": 1000, "scale": 1.0},
    "v3_small_x1.0": {"name": "mobilenet_v3_small", "class_num": 1000, "scale": 1.0},
    "v3_large_x1.0": {"name": "mobilenet_v3_large", "class_num": 1000, "scale": 1.0},
}
QUICK_V3 = ("v3_small_x1.0", 64)  # --quick's registry row: MobileNetV3's blocks through every engine
# configs/demo.yaml's model at its own 64x64, and the same config at scale 1.0 (big enough for
# INT8 kernels to pay off; x0.25's 8-256 channels gain little from them)
DEMO_MODELS = {"demo": {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}}
DEMO_MODELS["demo_x1.0"] = dict(DEMO_MODELS["demo"], scale=1.0)

# The CPU settings an engine's process starts with: "env" is cpu_env() (OMP_NUM_THREADS where
# unset, MKL_DEBUG_CPU_TYPE on AMD), "malloc" keep_freed_memory(): together configure_cpu(),
# what every tool of the project runs first.
PROJECT_CPU = ("env", "malloc")
# Paddle Inference rows (PaddlePredictor's options); the variants tried and dropped are in
# docs/benchmark_findings.md
PADDLE_VARIANTS = {
    "paddle-onednn": {},                                    # what `tools/infer.py --backend paddle` runs
    "paddle-native": {"use_onednn": False},
    "paddle-openvino": {"openvino": True, "legacy": True},  # OpenVINO inside Paddle Inference
    "paddle-gpu": {"gpu": True},                            # --gpu
}
# inference family -> (row name, engine kind, the prepared file it runs, CPU settings, threads:
# "each" a row per --threads count, "all" all cores, None left to configure_cpu as tools/infer.py)
FAMILIES = {
    "dygraph": ("dygraph", "dygraph", "weights", PROJECT_CPU, "all"),
    **{v: (v, "paddle", "export_dir", PROJECT_CPU, "each") for v, o in PADDLE_VARIANTS.items() if not o.get("gpu")},
    "paddle-gpu": ("paddle-gpu", "paddle", "export_dir", PROJECT_CPU, 1),
    "onnxruntime": ("onnxruntime", "onnx", "onnx", PROJECT_CPU, "each"),
    "int8-onnxruntime": ("int8-onnxruntime", "onnx", "int8", PROJECT_CPU, "each"),
    "lite-x86": ("lite-x86", "lite", "nb", (), 1),  # Lite's Python API has no thread setting
    "default": ("default", "default", "export_dir", PROJECT_CPU, None),
    "torch": ("torch-eager", "torch", "weights", (), "all"),
}
DEFAULT_INFERENCE = tuple(f for f in FAMILIES if f != "paddle-gpu")

# Training variants, Paddle's with the project's CPU settings: Paddle's own depthwise kernel, the
# packed depthwise path, tools/train.py's path (the compiled kernels of ppmobilenet.kernels +
# packed), one process per core, and the PyTorch peer as installed and with the same malloc
# setting (the fair peer); the GPU ones for --gpu. Those tried and dropped: docs/benchmark_findings.md
PACKED, TRAIN_PATH = {"packed": True}, {"packed": True, "compiled": True}
TRAIN_VARIANTS = {
    "paddle-unpacked": {"kind": "train"},
    "paddle-packed": {"kind": "train", "options": PACKED},
    "paddle": {"kind": "train", "options": TRAIN_PATH},
    "paddle+dp": {"kind": "train", "options": TRAIN_PATH, "launch": True},  # one process per core
    "torch": {"kind": "torch_train", "cpu": ()},
    "torch+keep-mem": {"kind": "torch_train", "cpu": ("malloc",)},
    "paddle-gpu": {"kind": "train", "device": "gpu"},
    "paddle-gpu+amp": {"kind": "train", "device": "gpu", "options": {"amp": True}},  # AMP O1
}
DEFAULT_TRAIN = tuple(v for v in TRAIN_VARIANTS if not v.startswith("paddle-gpu"))
# --gpu: MobileNetV1 x1.0 at 224, training at batch 256 (fp32, AMP O1), Paddle Inference at 1 and 64
GPU = {"sections": ["inference", "training"], "models": ["v1_x1.0"], "size": 224, "batches": [1, 64],
       "engines": ["paddle-gpu"], "train_engines": ["paddle-gpu", "paddle-gpu+amp"], "train_batch": 256,
       "train_cases": [("v1_x1.0", REGISTRY["v1_x1.0"], 224, None)]}


def thread_counts():
    """1 and all cores: a phone-like single thread and the whole machine."""
    return sorted({1, available_cores()})


def _torch_missing():
    return None if find_spec("torch") else "PyTorch is not installed (pip install 'ppmobilenet[bench]')"


def _engine(name, spec, threads, cpu, cmd=ENGINE, ranks=1):
    """-> (name, spec, command, env, ranks). threads None: left to configure_cpu, as the tools do."""
    return (name, dict(spec, threads=threads, cpu=list(cpu)), cmd,
            {} if threads is None else {"OMP_NUM_THREADS": threads}, ranks)


def inference_engines(families, prepared, arch, blocks, work_dir, inputs, threads):
    """-> ([engine], {family: why skipped}) for one prepared model (prepare.export); blocks: the
    model's block table, for the PyTorch peer (prepare.peer_blocks)."""
    engines, skipped, cores = [], {}, available_cores()
    for fam in families:
        row, kind, source, cpu, rows = FAMILIES[fam]
        why = _torch_missing() if kind == "torch" else \
            None if prepared.get(source) else "; ".join(prepared["notes"]) or f"no {source}"
        if why:
            skipped[fam] = why
            continue
        spec = {"kind": kind, "path": prepared[source], "inputs": inputs, "work_dir": work_dir,
                "arch": arch, "blocks": blocks, "options": PADDLE_VARIANTS.get(fam, {})}
        cmd = [prepared["lite_python"], LITE_SCRIPT] if kind == "lite" else ENGINE
        counts = {"each": threads or thread_counts(), "all": [cores], None: [None], 1: [1]}[rows]
        engines += [_engine(row if t is None else f"{row}-{t}t", spec, t, cpu, cmd) for t in counts]
    return engines, skipped


def train_engines(variants, arch, blocks, size, weights, work_dir):
    """-> ([engine], {variant: why skipped}); weights: the .safetensors every variant starts from."""
    engines, skipped, cores = [], {}, available_cores()
    for v in variants:
        spec = dict(TRAIN_VARIANTS[v], arch=arch, blocks=blocks, image_shape=[3, size, size], path=weights,
                    work_dir=work_dir)
        cpu, launch = spec.pop("cpu", PROJECT_CPU), spec.pop("launch", False)
        if launch and cores < 2:
            skipped[v] = "data parallel needs at least 2 cores"
        elif spec["kind"] == "torch_train" and _torch_missing():
            skipped[v] = _torch_missing()
        elif launch:  # each rank set up by the launcher; configure_cpu gives each its cores' share
            engines.append(_engine(v, spec, None, cpu, [
                sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(cores),
                "--log_dir", os.path.join(work_dir, "logs", "launch"), *ENGINE[1:]], cores))
        else:
            engines.append(_engine(v, spec, cores, cpu))
    return engines, skipped
