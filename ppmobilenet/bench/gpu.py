"""GPU numbers (`tools/benchmark.py --gpu`): one short script, under 10 minutes on one card.

  training   MobileNetV1 x1.0, 224x224, batch 256, fp32 and AMP O1: img/s (median of steps)
  inference  the exported model in Paddle Inference on the GPU, batch 1 and 64: ms and img/s

Needs a CUDA build of paddlepaddle and a visible GPU; it says so and stops otherwise. Results go
to <out>/gpu.json and are printed as a markdown row for docs/benchmarks.md.
"""
import os
import statistics
import time

import numpy as np
import paddle

from ppmobilenet.deploy.predictors import PaddlePredictor
from ppmobilenet.io import atomic_write_json

from .engines import make
from .prepare import export, imagenet_ops
from .procs import BenchError
from .specs import REGISTRY


def _median_s(run, steps, warmup):
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        run()
        times += [time.perf_counter() - t] if i >= warmup else []
    return statistics.median(times)


def run_gpu(out, log=print, batch=256):
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        raise BenchError("no GPU: this paddle is not a CUDA build or sees no device "
                           f"(compiled with CUDA: {paddle.is_compiled_with_cuda()})")
    paddle.set_device("gpu")
    name, work, arch = paddle.device.cuda.get_device_name(0), os.path.join(out, "work"), REGISTRY["v1_x1.0"]
    log(f"GPU: {name}")
    prepared = export("v1_x1.0", arch, 224, work, imagenet_ops(224), onnx=False, log=log)
    res = {"gpu": name, "paddle": paddle.__version__, "training": [], "inference": []}
    for amp in (False, True):
        engine = make({"kind": "train", "arch": arch, "path": prepared["weights"], "work_dir": work,
                       "device": "gpu", "image_shape": [3, 224, 224], "options": {"amp": amp}})
        engine.prepare(batch)  # and two steps
        res["training"].append({"amp": "O1" if amp else "off", "batch": batch,
                                "img_s": batch / _median_s(engine.step, 20, 1)})
    predictor = PaddlePredictor(prepared["export_dir"], gpu=True)
    for b in (1, 64):
        x = np.random.RandomState(0).standard_normal((b, 3, 224, 224)).astype("float32")
        ms = 1000.0 * _median_s(lambda: predictor.predict(x), 50, 5)
        res["inference"].append({"batch": b, "latency_ms": ms, "img_s": b * 1000.0 / ms})
    atomic_write_json(os.path.join(out, "gpu.json"), res)
    log("| GPU | training fp32 b256 img/s | AMP O1 b256 img/s | inference b1 ms | b64 img/s |")
    log(f"| {name} | {res['training'][0]['img_s']:.0f} | {res['training'][1]['img_s']:.0f} | "
        f"{res['inference'][0]['latency_ms']:.2f} | {res['inference'][1]['img_s']:.0f} |")
    return res
