"""Which engines the benchmark runs, and how each worker process is started (spec + env)."""
import os
import sys

from ppmobilenet.cpu import available_cores

# Paddle Inference variants, one knob each, for finding out where its time goes. All but
# "-untuned" start with the project's CPU settings (ppmobilenet/cpu.py), as tools/infer.py does.
PADDLE_VARIANTS = {
    "paddle-onednn": {"onednn": True},            # what `tools/infer.py --backend paddle` runs
    "paddle-onednn-untuned": {"onednn": True, "untuned": True},  # threads only: plain Paddle
    "paddle-native": {"onednn": False},
    "paddle-onednn-noir": {"onednn": True, "ir_optim": False},           # no IR passes
    "paddle-onednn-legacy": {"onednn": True, "format": "legacy"},        # ProgramDesc, old executor
    "paddle-onednn-memopt": {"onednn": True, "memory_optim": True},
    "paddle-onednn-cache1": {"onednn": True, "cache_capacity": 1},       # oneDNN shape cache of 1
    "paddle-openvino": {"openvino": True, "format": "legacy"},           # OpenVINO inside Paddle
}
INFERENCE_FAMILIES = ("dygraph", *PADDLE_VARIANTS, "onnxruntime", "int8-onnxruntime", "lite-x86",
                      "default", "torch")
DEFAULT_INFERENCE = ("dygraph", "paddle-onednn", "paddle-onednn-untuned", "paddle-native",
                     "paddle-openvino", "onnxruntime", "int8-onnxruntime", "lite-x86", "default",
                     "torch")
# training variants: plain Paddle (threads only), each CPU setting of ppmobilenet/cpu.py on its
# own, the CPU settings without the packed depthwise path, the project's default (tools/train.py:
# all of them), and one process per core on top
PACKED = {"packed_depthwise": True}
TRAIN_VARIANTS = {
    "paddle-untuned": {"kind": "train_paddle"},
    "paddle-untuned+mkl-avx2": {"kind": "train_paddle", "tune_cpu": True},
    "paddle-untuned+keep-mem": {"kind": "train_paddle", "keep_memory": True},
    "paddle-unpacked": {"kind": "train_paddle", "project_cpu": True},
    "paddle": {"kind": "train_paddle", "project_cpu": True, "options": PACKED},
    "paddle+dp": {"kind": "train_paddle_dp", "project_cpu": True, "procs": "cores",
                  "options": PACKED},
    # FLAGS_use_mkldnn in dygraph: no oneDNN kernel runs (ONEDNN_VERBOSE prints none in 3.3.1)
    "paddle+onednn-flag": {"kind": "train_paddle", "project_cpu": True,
                           "options": dict(PACKED, onednn=True)},
    "torch": {"kind": "train_torch"},
    "torch+keep-mem": {"kind": "train_torch", "keep_memory": True},
}
DEFAULT_TRAIN = ("paddle-untuned", "paddle-untuned+mkl-avx2", "paddle-unpacked", "paddle",
                 "paddle+dp", "torch", "torch+keep-mem")


def thread_counts():
    """1 and all cores: a phone-like single thread and the whole machine."""
    return sorted({1, available_cores()})


def have(module):
    from importlib.util import find_spec
    return find_spec(module) is not None


def inference_engines(families, prepared, arch, work_dir, inputs, lite_python=None, threads=None):
    """-> ([(name, spec, python, env)], {name: why skipped}) for one prepared model.
    threads: the thread counts of the Paddle Inference / ONNX Runtime rows [1 and all cores]."""
    engines, skipped = [], {}
    counts = list(threads or thread_counts())
    base = {"inputs": inputs, "work_dir": work_dir, "arch": arch, "softmax": True}
    all_cores = available_cores()

    def add(name, spec, threads, python=None, env=None):
        e = {"OMP_NUM_THREADS": threads}
        e.update(env or {})
        engines.append((name, dict(base, threads=threads, **spec), python or sys.executable, e))

    for fam in families:
        if fam == "dygraph":
            add(f"dygraph-{all_cores}t", {"kind": "dygraph", "weights": prepared["pdparams"],
                                          "project_cpu": True}, all_cores)
        elif fam in PADDLE_VARIANTS:
            opts = dict(PADDLE_VARIANTS[fam])
            project = not opts.pop("untuned", False)
            for t in counts:
                add(f"{fam}-{t}t", {"kind": "paddle", "export_dir": prepared["export_dir"],
                                    "options": opts, "project_cpu": project}, t)
        elif fam in ("onnxruntime", "int8-onnxruntime"):
            f = prepared.get("onnx") if fam == "onnxruntime" else prepared.get("int8")
            if not f:
                skipped[fam] = "; ".join(prepared["notes"]) or "no ONNX model"
                continue
            for t in counts:
                add(f"{fam}-{t}t", {"kind": "onnx", "onnx_file": f}, t)
        elif fam == "lite-x86":
            if not prepared.get("nb"):
                skipped[fam] = "; ".join(n for n in prepared["notes"] if n.startswith("lite")) \
                    or "no x86 .nb"
                continue
            # Lite's x86 runtime has no thread setting in its Python API: it runs one thread
            add("lite-x86-1t", {"kind": "lite", "nb": prepared["nb"]}, 1,
                python=lite_python)
        elif fam == "default":
            # OMP_NUM_THREADS is left to the project's own start-up code, as tools/infer.py does
            engines.append(("default", dict(base, kind="default", export_dir=prepared["export_dir"],
                                            project_cpu=True), sys.executable, {}))
        elif fam == "torch":
            if not have("torch"):
                skipped[fam] = "PyTorch is not installed (pip install 'ppmobilenet[bench]')"
                continue
            add(f"torch-eager-{all_cores}t", {"kind": "torch", "weights_npz": prepared["npz"]},
                all_cores)
        else:
            raise ValueError(f"--engines: unknown engine {fam!r}; choose from "
                             f"{', '.join(INFERENCE_FAMILIES)}")
    return engines, skipped


def train_engines(variants, arch, size, weights, threads=None):
    """-> ([(name, spec, python, env)], {name: why skipped})."""
    engines, skipped = [], {}
    threads = threads or available_cores()
    for v in variants:
        if v not in TRAIN_VARIANTS:
            raise ValueError(f"--train-engines: unknown {v!r}; choose from {', '.join(TRAIN_VARIANTS)}")
        spec = dict(TRAIN_VARIANTS[v], arch=arch, image_shape=[3, size, size], threads=threads,
                    work_dir=os.path.dirname(weights))
        if spec.get("procs") == "cores":
            spec["procs"] = threads
            if threads < 2:
                skipped[v] = "data parallel needs at least 2 cores"
                continue
        if spec["kind"] == "train_torch":
            if not have("torch"):
                skipped[v] = "PyTorch is not installed (pip install 'ppmobilenet[bench]')"
                continue
            spec["weights_npz"] = weights + ".npz"
        else:
            spec["weights"] = weights + ".pdparams"
        engines.append((v, spec, sys.executable, {"OMP_NUM_THREADS": threads}))
    return engines, skipped
