"""The benchmark's sections. Each returns a plain dict that goes into the JSON as it is.

inference  latency / throughput / peak RSS of every engine on each model, batch 1 and 8
training   img/s of training steps, Paddle variants vs the PyTorch peer, same weights
reader     reader cost vs batch cost in real tools/train.py runs (engine logs)
int8       top-1 of the INT8 model vs fp32 on the demo validation split; Lite weight quantization
"""
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from ppmobilenet.cpu import available_cores

from . import agreement, specs
from .models import DEMO_MODELS, REGISTRY
from .procs import BenchError, Worker
from .timing import interleave

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(engines, log_dir, log):
    """Start all, then wait for each: imports overlap. -> ({name: Worker}, {name: error})."""
    workers, errors = {}, {}
    for name, spec, python, env in engines:
        try:
            workers[name] = Worker(name, spec, python, env, log_dir)
        except OSError as e:
            errors[name] = f"engine {name}: cannot start {python}: {e}"
    for name in list(workers):
        try:
            workers[name].wait_ready()
        except BenchError as e:
            errors[name] = str(e)
            workers.pop(name).kill()
    log(f"  {len(workers)} engine processes ready" + (f", {len(errors)} failed" if errors else ""))
    return workers, errors


def _close(workers):
    mem = {}
    for name, w in workers.items():
        try:
            r = w.close()
            mem[name] = {"peak_rss_mib": (r["maxrss_kb"] + r.get("other_ranks_rss_kb", 0)) / 1024.0,
                         "start_rss_mib": r["base_rss_kb"] / 1024.0}
            if r.get("other_ranks_rss_kb"):  # data parallel: the sum over the ranks' processes
                mem[name]["rank0_peak_rss_mib"] = r["maxrss_kb"] / 1024.0
        except BenchError:
            w.kill()
    return mem


def _collect_outputs(workers, out_dir, errors):
    outputs = {}
    for name, w in workers.items():
        if name in errors:
            continue
        path = os.path.join(out_dir, f"{name}.npy")
        try:
            w.call("outputs", path=path)
            outputs[name] = np.load(path)
        except BenchError as e:
            errors[name] = str(e)
    return outputs


# ---------------------------------------------------------------- inference

def inference_model(key, arch, size, opts, work, log, weights=None):
    from .inputs import demo_eval_ops, write_inputs
    from .models import export, int8
    ops = demo_eval_ops() if key in DEMO_MODELS else None
    log(f"[inference] {key} at {size}x{size}: export, ONNX, Lite x86, INT8")
    t0 = time.time()
    families = list(opts["engines"])
    prepared = export(key, arch, size, work, weights=weights, lite="lite-x86" in families,
                      onnx=any(f in families for f in ("onnxruntime", "int8-onnxruntime")), log=log,
                      ops=ops)
    if "int8-onnxruntime" in families:
        try:
            int8(prepared, size, opts["calib_images"], log=log, ops=ops)
        except Exception as e:
            prepared["notes"].append(f"int8: {e}")
    inputs = write_inputs(os.path.join(work, f"inputs_{key}_{size}.npz"), size, ops=ops)
    engines, skipped = specs.inference_engines(families, prepared, arch, work, inputs,
                                               lite_python=opts.get("lite_python"),
                                               threads=opts.get("threads"))
    log_dir = os.path.join(work, "logs", f"{key}_{size}")
    os.makedirs(log_dir, exist_ok=True)
    workers, errors = _start(engines, log_dir, log)
    result = {"model": key, "arch": arch, "size": size, "prepare_s": time.time() - t0,
              "engines": {}, "skipped": skipped, "errors": errors, "notes": prepared["notes"]}
    try:
        for batch in opts["batches"]:
            log(f"  batch {batch}: {len(workers)} engines, {opts['rounds']} interleaved rounds")
            stats, errs = interleave(workers, batch, rounds=opts["rounds"], warmup=opts["warmup"],
                                     target_s=opts["target_s"], gap_s=opts["gap_s"], log=log)
            errors.update(errs)
            for name, s in stats.items():
                result["engines"].setdefault(name, {"batches": {}})["batches"][str(batch)] = s
        out_dir = os.path.join(work, "outputs", f"{key}_{size}")
        os.makedirs(out_dir, exist_ok=True)
        outputs = _collect_outputs(workers, out_dir, errors)
    finally:
        mem = _close(workers)
    for name, m in mem.items():
        result["engines"].setdefault(name, {"batches": {}})["memory"] = m
    ref = next((n for n in ("paddle-onednn-1t", "paddle-onednn-%dt" % available_cores())
                if n in outputs), next(iter(outputs), None))
    if ref:
        result["reference"] = ref
        result["agreement"] = agreement.compare_outputs(outputs, ref, trained=bool(weights))
        result["trained_weights"] = weights
    for name in result["engines"]:
        info = workers[name].info if name in workers else {}
        result["engines"][name]["env"] = {"OMP_NUM_THREADS": info.get("omp_threads"),
                                          "MKL_DEBUG_CPU_TYPE": info.get("mkl_debug_cpu_type")}
        if info.get("engine"):
            result["engines"][name]["engine"] = info["engine"]
    _log_model(result, log)
    return result


def _log_model(r, log):
    for name, e in r["engines"].items():
        cells = [f"b{b}: {s['latency_ms']:.2f} ms {s['throughput']:.1f} img/s"
                 for b, s in e["batches"].items()]
        agree = (r.get("agreement") or {}).get(name, {})
        log(f"    {name:24s} " + " | ".join(cells)
            + (f" | peak {e['memory']['peak_rss_mib']:.0f} MiB" if "memory" in e else "")
            + (f" | diff {agree['max_abs_diff']:.1e}" if "max_abs_diff" in agree else ""))
    for name, why in r["skipped"].items():
        log(f"    {name:24s} skipped: {why}")
    for name, err in r["errors"].items():
        log(f"    {name:24s} FAILED: {err.splitlines()[0]}")


# ---------------------------------------------------------------- training

def _train_groups(names, size, batch):
    """Processes alive at once: each holds its activations for backward (~2.2 GiB for
    MobileNetV1 x1.0, 224x224, batch 32); keep the sum under 70% of the available memory.
    Every group holds the PyTorch peer (when present) so each ratio comes from one group."""
    need = 0.3 + 2.0 * (size / 224.0) ** 2 * (batch / 32.0)  # GiB per process, measured
    avail = _mem_available_gib()
    k = max(2, int(0.7 * avail / need)) if avail else len(names)
    if k >= len(names):
        return [list(names)]
    peer = [n for n in names if n == "torch"]
    rest = [n for n in names if n != "torch"]
    step = max(1, k - len(peer))
    return [rest[i:i + step] + peer for i in range(0, len(rest), step)]


def _mem_available_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0 ** 2
    except OSError:
        pass
    return None


def training(cases, opts, work, log):
    """cases: [(label, arch, size, batch)] -> list of results."""
    from .models import make_weights
    results = []
    for label, arch, size, batch in cases:
        log(f"[training] {label}: {size}x{size}, batch {batch}")
        d = os.path.join(work, "train", f"{label}_{size}_b{batch}")
        os.makedirs(d, exist_ok=True)
        prefix = os.path.join(d, "init")
        make_weights(arch, prefix, sharpen=1.0)  # the same starting weights for every engine
        engines, skipped = specs.train_engines(opts["train_engines"], arch, size, prefix,
                                               threads=opts.get("train_threads"))
        by_name = {e[0]: e for e in engines}
        groups = _train_groups(list(by_name), size, batch)
        res = {"label": label, "arch": arch, "size": size, "batch": batch, "engines": {},
               "skipped": skipped, "errors": {}, "groups": groups}
        losses = {}
        for gi, group in enumerate(groups):
            if len(groups) > 1:
                log(f"  group {gi + 1}/{len(groups)} (memory): {', '.join(group)}")
            workers, errors = _start([by_name[n] for n in group], os.path.join(d, "logs"), log)
            res["errors"].update(errors)
            try:
                stats, errs = interleave(workers, batch, rounds=opts["train_rounds"], warmup=1,
                                         target_s=opts["train_target_s"], gap_s=opts["gap_s"],
                                         log=log)
                res["errors"].update(errs)
                outs = _collect_outputs(workers, os.path.join(d, "logs"), res["errors"])
            finally:
                mem = _close(workers)
            for name, s in stats.items():
                key = name if name not in res["engines"] else f"{name}@group{gi + 1}"
                res["engines"][key] = dict(s, memory=mem.get(name), group=gi + 1)
            for name, l in outs.items():
                losses.setdefault(name, l.tolist())
        ref = "paddle" if "paddle" in losses else next(iter(losses), None)
        if ref:
            res["reference"] = ref
            res["agreement"] = agreement.compare_losses(losses, ref)
        for name, s in res["engines"].items():
            log(f"    {name:28s} {s['throughput']:7.2f} img/s  ({s['latency_ms'] / 1000:.2f} s/step, "
                f"cpu {s['cpu_ms'] / 1000:.2f} s)  peak {(s['memory'] or {}).get('peak_rss_mib', 0):.0f} MiB")
        for name, err in res["errors"].items():
            log(f"    {name:28s} FAILED: {err.splitlines()[0]}")
        results.append(res)
    return results


# ---------------------------------------------------------------- reader cost

LINE = re.compile(r"batch_cost ([0-9.]+)s reader_cost ([0-9.]+)s ips ([0-9.]+)")


def _train_tool(config, overrides, out_dir, log, timeout=3600):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", config, "-o",
           *overrides, f"Global.output_dir={out_dir}"]
    log("  $ " + " ".join(cmd[1:]))
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if p.returncode != 0:
        raise BenchError(f"tools/train.py failed (exit {p.returncode}):\n" + "\n".join(
            (p.stdout + p.stderr).strip().splitlines()[-15:]))
    windows = [tuple(float(v) for v in m.groups()) for m in LINE.finditer(p.stdout)]
    if not windows:
        raise BenchError("tools/train.py printed no `batch_cost ... reader_cost` line")
    batch = sum(w[0] for w in windows)
    reader = sum(w[1] for w in windows)
    steady = windows[1:] or windows
    evals = re.findall(r"eval epoch \[\d+/\d+\] loss [0-9.]+ top1 ([0-9.]+)", p.stdout)
    return {"command": " ".join(["python"] + cmd[1:]), "wall_s": time.time() - t,
            "windows": len(windows), "reader_share": reader / batch,
            "reader_share_after_first_window": sum(w[1] for w in steady) / sum(w[0] for w in steady),
            "mean_batch_cost_s": batch / len(windows), "mean_reader_cost_s": reader / len(windows),
            "ips": float(np.median([w[2] for w in windows])),
            "last_eval_top1": float(evals[-1]) if evals else None}


def train_demo(key, opts, work, log):
    """A real `tools/train.py -c configs/demo.yaml` run (its reader cost is measured too).
    key: "demo" (the config as it is, MobileNetV1 x0.25) or "demo_x1.0" (Arch.scale=1.0: big
    enough for INT8 kernels to pay off; x0.25's 8-256 channels gain nothing from them)."""
    arch = DEMO_MODELS[key]
    out_dir = os.path.join(work, f"train_{key}")
    shutil.rmtree(out_dir, ignore_errors=True)
    log(f"[train] {key}: configs/demo.yaml, MobileNetV1 x{arch['scale']}, {opts['demo_epochs']} epochs")
    run = _train_tool(os.path.join(ROOT, "configs", "demo.yaml"),
                      [f"Global.epochs={opts['demo_epochs']}", "Global.use_visualdl=False",
                       f"Global.save_interval={opts['demo_epochs']}", f"Arch.scale={arch['scale']}"],
                      out_dir, log)
    run["weights"] = os.path.join(out_dir, "best_model.pdparams")
    log(f"  {key}: reader {100 * run['reader_share']:.2f}% of batch cost, {run['ips']:.0f} img/s, "
        f"last eval top-1 {run['last_eval_top1']}")
    return run


def reader_cost(opts, work, log):
    """Reader cost / batch cost: the demo training run (configs/demo.yaml, which also gives the
    INT8 and inference sections their trained model) and a 224x224 run: MobileNetV1 x1.0,
    batch 32, the default loader (2 workers) on the digits written as 224x224 PNGs."""
    from ppmobilenet.data.demo import prepare_demo_digits
    from .inputs import MEAN, STD, read_list
    out = {"demo": train_demo("demo", opts, work, log)}
    paths = prepare_demo_digits(image_size=224)
    items = read_list(paths["train_list"])
    n = opts["reader_images_224"]
    lst = os.path.join(work, "train_224_subset.txt")
    with open(lst, "w") as f:
        for p, label in items[:n]:
            f.write(f"{os.path.relpath(p, paths['root'])} {label}\n")
    log(f"[reader] 224x224 run: MobileNetV1 x1.0, batch 32, {n} images, default workers")
    # configs/MobileNetV1_x1_0.yaml's training transforms (normalised in numpy, HWC)
    mean, std = [round(255 * m, 3) for m in MEAN], [round(255 * s, 3) for s in STD]
    tf = (f"DataLoader.Train.transforms=[{{RandomResizedCrop: {{size: 224}}}}, "
          f"{{RandomHorizontalFlip: {{}}}}, {{Normalize: {{mean: {mean}, std: {std}, "
          f"data_format: HWC}}}}, {{Transpose: {{order: [2, 0, 1]}}}}]")
    out["224"] = _train_tool(os.path.join(ROOT, "configs", "demo.yaml"), [
        "Global.epochs=1", "Global.eval_during_train=False", "Global.use_visualdl=False",
        "Global.print_batch_step=2", "Global.image_shape=[3, 224, 224]",
        "Arch.scale=1.0", "DataLoader.Train.dataset.name=ImageNetDataset",
        f"DataLoader.Train.dataset.image_root={paths['root']}",
        f"DataLoader.Train.dataset.cls_label_path={lst}", tf,
        "DataLoader.Train.sampler.batch_size=32"], os.path.join(work, "reader_224"), log)
    log(f"  224: reader {100 * out['224']['reader_share']:.2f}% of batch cost "
        f"({100 * out['224']['reader_share_after_first_window']:.2f}% after the first window)")
    return out


# ---------------------------------------------------------------- int8 accuracy

def int8_accuracy(key, weights, opts, work, log, lite=False):
    """A model trained on the demo digits: fp32 vs INT8 (onnxruntime) top-1 on the whole
    validation split; with lite, also Lite's weight-only int8 (.nb sizes; accuracy by emulating
    its weight rounding)."""
    import paddle
    from .inputs import demo_eval_ops, load_split
    from .int8 import fake_quant_weights, quantize_onnx, top1
    from .models import export
    arch = DEMO_MODELS[key]
    ops = demo_eval_ops()  # the config's eval preprocessing, as its training run evaluated
    log(f"[int8] {key}: calibrate on the training split, evaluate on the validation split")
    prepared = export(f"{key}_acc", arch, 64, work, weights=weights, lite=lite, onnx=True, log=log,
                      ops=ops)
    if not prepared["onnx"]:
        raise BenchError("int8: " + "; ".join(prepared["notes"]))
    calib, _ = load_split("train", 64, limit=opts["calib_images"], ops=ops)
    q = quantize_onnx(prepared["onnx"], calib, log=log)
    xv, yv = load_split("val", 64, ops=ops)
    fp32, i8 = top1(prepared["onnx"], xv, yv), top1(q, xv, yv)
    res = {"model": key, "arch": arch, "weights": weights, "calibration_images": len(calib),
           "val_images": len(xv), "fp32_top1": fp32, "int8_top1": i8,
           "drop_points": 100.0 * (fp32 - i8),
           "fp32_onnx_bytes": os.path.getsize(prepared["onnx"]), "int8_onnx_bytes": os.path.getsize(q)}
    log(f"  top-1 fp32 {100 * fp32:.2f}%  int8 {100 * i8:.2f}%  drop {res['drop_points']:.2f} points")
    if not lite:
        return res
    try:  # Lite: opt's weight-only QUANT_INT8 for arm, next to the fp32 arm .nb
        from ppmobilenet.deploy import convert_lite
        from ppmobilenet.models import build_model_from_arch
        lite_dir = os.path.join(prepared["export_dir"], "lite")
        nb = convert_lite(prepared["export_dir"], ["arm"], log=lambda m: None)["arm"]
        fp32_nb = os.path.join(lite_dir, "fp32_arm.nb")
        os.replace(nb, fp32_nb)
        q_nb = convert_lite(prepared["export_dir"], ["arm"], quant_type="QUANT_INT8",
                            log=lambda m: None)["arm"]
        model = build_model_from_arch(arch)
        state = {k: v.numpy() for k, v in paddle.load(prepared["pdparams"]).items()}
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in fake_quant_weights(state).items()})
        model.eval()
        with paddle.no_grad():
            pred = np.concatenate([model(paddle.to_tensor(xv[i:i + 128])).numpy().argmax(1)
                                   for i in range(0, len(xv), 128)])
        res["lite"] = {"fp32_arm_nb_bytes": os.path.getsize(fp32_nb),
                       "int8_arm_nb_bytes": os.path.getsize(q_nb),
                       "int8_weights_top1_emulated": float((pred == yv).mean())}
        log(f"  Lite arm .nb: fp32 {res['lite']['fp32_arm_nb_bytes']} bytes, QUANT_INT8 "
            f"{res['lite']['int8_arm_nb_bytes']} bytes; int8-weight top-1 (emulated) "
            f"{100 * res['lite']['int8_weights_top1_emulated']:.2f}%")
    except Exception as e:
        res["lite_error"] = str(e).splitlines()[0]
        log(f"  Lite weight quantization: {res['lite_error']}")
    return res
