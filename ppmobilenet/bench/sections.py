"""The benchmark's sections; each returns plain dicts that go into results.json as they are:
inference (latency, throughput, peak RSS of every engine on one model), training (img/s of
Paddle's variants and the PyTorch peer from the same weights), reader (reader cost vs batch cost
in real tools/train.py runs) and int8 (top-1 of the INT8 model vs fp32; Lite's int8 weights)."""
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from ppmobilenet.cpu import available_cores
from ppmobilenet.deploy import convert_lite
from ppmobilenet.deploy.int8 import top1
from ppmobilenet.deploy.predictors import DygraphPredictor
from ppmobilenet.models import count_macs
from ppmobilenet.weights import read_safe_weights, save_safe_weights

from . import agreement, prepare, report, specs
from .procs import BenchError, measure


def inference_model(key, arch, size, opts, work, log, weights=None):
    ops = None if key in specs.DEMO_MODELS else prepare.imagenet_ops(size)
    log(f"[inference] {key} at {size}x{size}: export, ONNX, Lite x86, INT8")
    families = opts["engines"]
    p = prepare.export(key, arch, size, work, weights, opts["lite"] if "lite-x86" in families else None,
                       any(f.endswith("onnxruntime") for f in families), ops, log)
    if "int8-onnxruntime" in families and p["onnx"]:
        try:
            p["int8"] = prepare.int8_model(p["onnx"], opts["calib_images"], ops, log)
        except Exception as e:  # a note; the int8 rows are skipped, the others go on
            p["notes"].append(f"int8: {e}")
    inputs = prepare.write_inputs(os.path.join(work, f"inputs_{key}_{size}.npz"), ops)
    engines, skipped = specs.inference_engines(families, p, arch, prepare.peer_blocks(arch), work, inputs,
                                               opts["threads"])
    res = {"model": key, "arch": arch, "size": size, "batches": opts["batches"], "skipped": skipped,
           "notes": p["notes"]}
    res["engines"], outputs, res["errors"] = measure(
        engines, opts["batches"], {k: opts[k] for k in ("rounds", "warmup", "target_s", "gap_s")},
        os.path.join(work, "logs", f"{key}_{size}"), log)
    outputs = {n: np.load(f) for n, f in outputs.items()}
    ref = next((n for n in (f"paddle-onednn-{t}t" for t in (1, available_cores())) if n in outputs),
               next(iter(outputs), None))
    if ref:
        res.update(reference=ref, agreement=agreement.compare_outputs(outputs, ref, trained=bool(weights)))
    log("\n".join(report.engine_table(res)))
    return res


def _train_groups(names, size, batch):
    """Processes alive at once: each holds its activations for backward (~2.2 GiB for
    MobileNetV1 x1.0, 224x224, batch 32); keep the sum under 70% of the available memory.
    Every group holds the PyTorch peers, so each ratio to them comes from one group."""
    need = 0.3 + 2.0 * (size / 224.0) ** 2 * (batch / 32.0)  # GiB per process, measured
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1024 ** 2
    peers = [n for n in names if n.startswith("torch")]
    rest, step = [n for n in names if n not in peers], max(1, int(0.7 * avail / need) - len(peers))
    return [rest[i:i + step] + peers for i in range(0, len(rest), step)] or [peers]


def training(cases, opts, work, log):
    """cases: [(model key, arch, size, batch)] -> [result]; one step a round."""
    results = []
    for key, arch, size, batch in cases:
        log(f"[training] {key}: {size}x{size}, batch {batch}")
        d = os.path.join(work, "train", f"{key}_{size}_b{batch}")
        # the same start for every engine; unsharpened: training losses stay near log(classes)
        model, weights = prepare.make_weights(arch, os.path.join(d, "init.safetensors"), sharpen=1.0)
        engines, skipped = specs.train_engines(opts["train_engines"], arch, prepare.peer_blocks(arch), size,
                                               weights, d)
        res = {"model": key, "arch": arch, "size": size, "batch": batch, "batches": [batch], "engines": {},
               "skipped": skipped, "errors": {}, "macs_per_image": count_macs(model, size),
               "groups": _train_groups([e[0] for e in engines], size, batch)}
        losses = {}
        timing = {"rounds": opts["train_rounds"], "warmup": 1, "target_s": 0.0, "gap_s": opts["gap_s"]}
        for gi, group in enumerate(res["groups"], 1):
            if len(res["groups"]) > 1:
                log(f"  group {gi}/{len(res['groups'])} (memory): {', '.join(group)}")
            got, outs, errors = measure([e for e in engines if e[0] in group], [batch], timing,
                                        os.path.join(d, "logs"), log)
            res["errors"].update(errors)
            res["engines"].update({(n if n not in res["engines"] else f"{n}@group{gi}"): dict(e, group=gi)
                                   for n, e in got.items()})
            losses.update({n: np.load(f).tolist() for n, f in outs.items() if n not in losses})
        ref = "paddle" if "paddle" in losses else next(iter(losses), None)
        if ref:
            res.update(reference=ref, agreement=agreement.compare_losses(losses, ref))
        log("\n".join(report.engine_table(res)))
        results.append(res)
    return results


LINE = re.compile(r"batch_cost ([0-9.]+)s reader_cost ([0-9.]+)s ips ([0-9.]+)")


def train_run(key, opts, work, log):
    """A real `tools/train.py -c configs/demo.yaml` run at the scale of DEMO_MODELS[key] -> its
    reader and batch cost (its log lines: the reader section), and its best model (for the INT8
    and inference sections)."""
    out_dir, epochs = os.path.join(work, f"train_{key}"), opts["demo_epochs"]
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, os.path.join(specs.ROOT, "tools", "train.py"), "-c", specs.DEMO_CONFIG, "-o",
           f"Global.epochs={epochs}", f"Global.save_interval={epochs}",
           f"Arch.scale={specs.DEMO_MODELS[key]['scale']}",
           "Global.use_visualdl=False", f"Global.output_dir={out_dir}"]
    log(f"[train] {key}: $ " + " ".join(cmd[1:]))
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=specs.ROOT)
    if p.returncode != 0:
        raise BenchError(f"tools/train.py failed (exit {p.returncode}):\n" + "\n".join(
            (p.stdout + p.stderr).strip().splitlines()[-15:]))
    w = np.array([[float(v) for v in m.groups()] for m in LINE.finditer(p.stdout)]).reshape(-1, 3)
    if not len(w):
        raise BenchError("tools/train.py printed no `batch_cost ... reader_cost` line")
    steady = w[1:] if len(w) > 1 else w
    evals = re.findall(r"eval epoch \[\d+/\d+\] loss [0-9.]+ top1 ([0-9.]+)", p.stdout)
    run = {"command": " ".join(["python"] + cmd[1:]), "wall_s": time.time() - t, "windows": len(w),
           "reader_share": w[:, 1].sum() / w[:, 0].sum(), "reader_share_after_first_window":
           steady[:, 1].sum() / steady[:, 0].sum(), "mean_batch_cost_s": w[:, 0].mean(),
           "mean_reader_cost_s": w[:, 1].mean(), "ips": float(np.median(w[:, 2])),
           "last_eval_top1": float(evals[-1]) if evals else None,
           "weights": os.path.join(out_dir, "best_model.pdparams")}
    log(f"  {key}: reader {100 * run['reader_share']:.2f}% of batch cost "
        f"({100 * run['reader_share_after_first_window']:.2f}% after the first window), "
        f"{run['ips']:.0f} img/s, last eval top-1 {run['last_eval_top1']}")
    return run


def int8_accuracy(key, weights, opts, work, log):
    """A model trained on the demo digits: fp32 vs INT8 (ONNX Runtime) top-1 on the whole
    validation split; with Lite, for the demo model, also opt's weight-only int8 for arm (.nb
    sizes, and top-1 with its weight rounding emulated: Lite's x86 runtime cannot run it)."""
    arch = specs.DEMO_MODELS[key]  # preprocessed as its training run's eval (the config's own ops)
    lite = opts["lite"] if key == "demo" and not isinstance(opts["lite"], str) else None
    log(f"[int8] {key}: calibrate on the training split, evaluate on the validation split")
    p = prepare.export(f"{key}_acc", arch, 64, work, weights, lite, log=log)
    if not p["onnx"]:
        raise BenchError("; ".join(p["notes"]))
    q, (xv, yv) = prepare.int8_model(p["onnx"], opts["calib_images"], log=log), prepare.val_images()
    fp32, i8 = top1(p["onnx"], xv, yv), top1(q, xv, yv)
    res = {"model": key, "arch": arch, "weights": weights, "calibration_images": opts["calib_images"],
           "val_images": len(xv), "fp32_top1": fp32, "int8_top1": i8, "drop_points": 100.0 * (fp32 - i8),
           "fp32_onnx_bytes": os.path.getsize(p["onnx"]), "int8_onnx_bytes": os.path.getsize(q)}
    log(f"  top-1 fp32 {100 * fp32:.2f}%  int8 {100 * i8:.2f}%  drop {res['drop_points']:.2f} points")
    if not p["nb"]:
        return res
    try:
        res["lite"] = {"fp32_arm_nb_bytes": os.path.getsize(
            convert_lite(p["export_dir"], ["arm"], lite, log=prepare.QUIET, record=False)["arm"])}
        res["lite"]["int8_arm_nb_bytes"] = os.path.getsize(
            convert_lite(p["export_dir"], ["arm"], lite, quant_type="QUANT_INT8", log=prepare.QUIET)["arm"])
        rounded = save_safe_weights(os.path.join(work, f"{key}_int8_rounded.safetensors"),
                                    prepare.fake_quant_weights(read_safe_weights(p["weights"])[0]), arch)
        model = DygraphPredictor({"Arch": arch, "Global": {"output_dir": work}}, rounded)
        pred = np.concatenate([model.predict(xv[i:i + 128]).argmax(1) for i in range(0, len(xv), 128)])
        res["lite"]["int8_weights_top1_emulated"] = float((pred == yv).mean())
        log(f"  Lite arm .nb: {res['lite']}")
    except Exception as e:  # reported in the results; the fp32 / INT8 figures stand
        res.pop("lite", None)
        res["lite_error"] = str(e).splitlines()[0]
        log(f"  Lite weight quantization: {res['lite_error']}")
    return res
