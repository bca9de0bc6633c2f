"""GPU numbers (`tools/benchmark.py --gpu`): one short script, under 10 minutes on one card.

  training   MobileNetV1 x1.0, 224x224, batch 256, fp32 and AMP O1: img/s (median of steps)
  inference  the exported model in Paddle Inference on the GPU, batch 1 and 64: ms and img/s

Needs a CUDA build of paddlepaddle and a visible GPU; it says so and stops otherwise. Results go
to <out>/gpu.json and are printed as markdown rows for docs/benchmarks.md.
"""
import json
import os
import statistics
import time

import numpy as np


def _train(amp, steps, batch, log):
    import paddle
    from ppmobilenet.models import build_model
    paddle.seed(0)
    model = build_model("mobilenet_v1", class_dim=1000, scale=1.0, head="classic")
    opt = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=model.parameters())
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024.0) if amp else None
    loss_fn = paddle.nn.CrossEntropyLoss()
    x = paddle.randn([batch, 3, 224, 224])
    y = paddle.randint(0, 1000, [batch])
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        if amp:
            with paddle.amp.auto_cast(level="O1"):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        opt.clear_grad()
        loss.item()  # waits for the GPU
        if i >= 3:
            times.append(time.perf_counter() - t)
    ips = batch / statistics.median(times)
    log(f"  training {'AMP O1' if amp else 'fp32'} batch {batch}: {ips:.0f} img/s")
    return {"amp": "O1" if amp else "off", "batch": batch, "img_s": ips, "steps": steps}


def _infer(export_dir, batch, iters, log):
    from paddle import inference
    config = inference.Config(os.path.join(export_dir, "inference.json"),
                              os.path.join(export_dir, "inference.pdiparams"))
    config.enable_use_gpu(256, 0)
    config.disable_glog_info()
    pred = inference.create_predictor(config)
    inp = pred.get_input_handle(pred.get_input_names()[0])
    out = pred.get_output_handle(pred.get_output_names()[0])
    x = np.random.RandomState(0).standard_normal((batch, 3, 224, 224)).astype("float32")
    times = []
    for i in range(iters + 5):
        t = time.perf_counter()
        inp.reshape(list(x.shape))
        inp.copy_from_cpu(x)
        pred.run()
        out.copy_to_cpu()
        if i >= 5:
            times.append(time.perf_counter() - t)
    ms = 1000.0 * statistics.median(times)
    log(f"  Paddle Inference GPU batch {batch}: {ms:.2f} ms, {batch * 1000.0 / ms:.0f} img/s")
    return {"batch": batch, "latency_ms": ms, "img_s": batch * 1000.0 / ms}


def run_gpu(out, log=print, steps=20, batch=256):
    import paddle
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        raise RuntimeError("no GPU: this paddle is not a CUDA build or sees no device "
                           f"(compiled with CUDA: {paddle.is_compiled_with_cuda()})")
    paddle.set_device("gpu")
    name = paddle.device.cuda.get_device_name(0)
    log(f"GPU: {name}")
    res = {"gpu": name, "paddle": paddle.__version__, "training": [], "inference": []}
    for amp in (False, True):
        res["training"].append(_train(amp, steps, batch, log))
    from ppmobilenet.bench.models import REGISTRY, export
    prepared = export("v1_x1.0", REGISTRY["v1_x1.0"], 224, os.path.join(out, "work"), lite=False,
                      onnx=False, log=log)
    for b in (1, 64):
        res["inference"].append(_infer(prepared["export_dir"], b, 50, log))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu.json.tmp"), "w") as f:
        json.dump(res, f, indent=2)
    os.replace(os.path.join(out, "gpu.json.tmp"), os.path.join(out, "gpu.json"))
    log("| GPU | training fp32 b256 img/s | AMP O1 b256 img/s | inference b1 ms | b64 img/s |")
    log(f"| {name} | {res['training'][0]['img_s']:.0f} | {res['training'][1]['img_s']:.0f} | "
        f"{res['inference'][0]['latency_ms']:.2f} | {res['inference'][1]['img_s']:.0f} |")
    return res
