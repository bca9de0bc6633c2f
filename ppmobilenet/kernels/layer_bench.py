"""Per-layer timings of the compiled kernels against Paddle's own operators, the packed path and
PyTorch (when installed), forward + backward, on the layers of a model: for docs/benchmarks.md
and for development. compare_layers(...) -> rows; nothing here runs at import."""
import json
import os
import subprocess
import sys
import time

import paddle
import paddle.nn.functional as F
from paddle import nn

from ..cpu import keep_freed_memory
from ..models import build_model_from_arch
from . import ops
from .layers import FUSED_ACTIVATIONS, is_depthwise3x3, is_fusable_conv_bn
from .packed import MAX_PLANE, packed_depthwise_conv

# the two goal cases of issue 13
CASES = {"v1_x1.0@224": ({"name": "mobilenet_v1", "class_num": 1000, "scale": 1.0,
                          "head": "classic"}, 224, 32),
         "demo@64": ({"name": "mobilenet_v1", "class_num": 10, "scale": 0.25,
                      "head": "classic"}, 64, 64)}


def layer_shapes(arch, size):
    """[(kind, C, H, W, stride or activation)] of the 3x3 depthwise convs ("depthwise") and
    conv + BatchNorm + activation blocks ("bn_act") of `arch` at `size`, in forward order."""
    model, seen = build_model_from_arch(arch), []
    hooks = []
    for layer in model.sublayers():
        if is_depthwise3x3(layer):
            hooks.append(layer.register_forward_pre_hook(
                lambda l, a: seen.append(("depthwise", *a[0].shape[1:], l._stride[0]))))
        if is_fusable_conv_bn(layer):
            hooks.append(layer.bn.register_forward_pre_hook(
                lambda l, a, act=FUSED_ACTIVATIONS[type(layer.act)]:
                seen.append(("bn_act", *a[0].shape[1:], act))))
    model.eval()
    with paddle.no_grad():
        model(paddle.zeros([1, 3, size, size]))
    for h in hooks:
        h.remove()
    return seen


def _best_ms(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _paddle_step(forward, inputs, grad):
    def run():
        paddle.autograd.backward([forward(*inputs)], [grad])
        for t in inputs:
            t.clear_gradient()
    return run


def _depthwise_ms(n, c, h, w, stride, repeats):
    x = paddle.randn([n, c, h, w])
    k = paddle.randn([c, 1, 3, 3])
    x.stop_gradient = k.stop_gradient = False
    g = paddle.randn([n, c, (h - 1) // stride + 1, (w - 1) // stride + 1])
    row = {"paddle_ms": _best_ms(_paddle_step(
        lambda a, b: F.conv2d(a, b, stride=stride, padding=1, groups=c), (x, k), g), repeats),
           "compiled_ms": _best_ms(_paddle_step(
               lambda a, b: ops.depthwise3x3(a, b, stride), (x, k), g), repeats)}
    if h * w <= MAX_PLANE:
        row["packed_ms"] = _best_ms(_paddle_step(
            lambda a, b: packed_depthwise_conv(a, b, stride), (x, k), g), repeats)
    return row


def _bn_act_ms(n, c, h, w, act, repeats):
    x = paddle.randn([n, c, h, w])
    x.stop_gradient = False
    g = paddle.randn([n, c, h, w])
    bn = nn.BatchNorm2D(c)
    bn.train()
    act_fn = {None: lambda t: t, "relu": F.relu, "clip6": lambda t: paddle.clip(t, 0.0, 6.0),
              "hardswish": F.hardswish}[act]
    row = {"paddle_ms": _best_ms(_paddle_step(lambda a: act_fn(bn(a)), (x,), g), repeats),
           "compiled_ms": _best_ms(_paddle_step(lambda a: ops.bn_act(a, bn, act), (x,), g),
                                   repeats)}
    return row


def torch_worker():
    """In a process of its own (PyTorch's OpenMP runtime and Paddle's would each spin their
    threads in one process): rows as JSON on stdin -> their torch_ms as JSON on stdout."""
    import torch
    keep_freed_memory()  # the malloc setting ppmobilenet's own processes run with
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    spec = json.load(sys.stdin)
    times = []
    for kind, (n, c, h, w), extra in spec["rows"]:
        x = torch.randn(n, c, h, w, requires_grad=True)
        if kind == "depthwise":
            k = torch.randn(c, 1, 3, 3, requires_grad=True)
            layer = lambda t: torch.nn.functional.conv2d(t, k, stride=extra, padding=1, groups=c)
        else:
            act = {None: torch.nn.Identity(), "relu": torch.nn.ReLU(), "clip6": torch.nn.ReLU6(),
                   "hardswish": torch.nn.Hardswish()}[extra]
            bn = torch.nn.BatchNorm2d(c).train()
            layer = lambda t: act(bn(t))
        g = torch.randn_like(layer(x))

        def run():
            layer(x).backward(g)
            x.grad = None
        times.append(_best_ms(run, spec["repeats"]))
    json.dump(times, sys.stdout)


def _torch_ms(rows, repeats):
    """torch_worker's timings of `rows`, or None when PyTorch is not installed."""
    spec = {"repeats": repeats,
            "rows": [(r["kind"], r["shape"], r.get("stride", r.get("act"))) for r in rows]}
    code = "from ppmobilenet.kernels.layer_bench import torch_worker; torch_worker()"
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), text=True,
                         capture_output=True)
    if out.returncode != 0:
        if "No module named 'torch'" in out.stderr:
            return None
        raise RuntimeError(f"the PyTorch timing process failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_layers(case="v1_x1.0@224", repeats=5, with_torch=True):
    """Forward + backward of every layer the compiled kernels take in `case` (a CASES key):
    [{"kind", "shape": (N, C, H, W), "count", "stride" | "act", "paddle_ms", "compiled_ms",
    "packed_ms" (planes <= MAX_PLANE), "torch_ms" (with_torch and torch installed)}], best of
    `repeats`. Identical layers are timed once ("count" says how many the model has). The
    kernels must load (ops.load()); threads are what the process has (OMP_NUM_THREADS; PyTorch,
    timed in a process of its own, gets the same number)."""
    ops.load()
    arch, size, batch = CASES[case]
    counts = {}
    for shape in layer_shapes(arch, size):
        counts[shape] = counts.get(shape, 0) + 1
    rows = []
    for (kind, c, h, w, extra), count in counts.items():
        timer = _depthwise_ms if kind == "depthwise" else _bn_act_ms
        row = {"kind": kind, "shape": (batch, c, h, w), "count": count,
               ("stride" if kind == "depthwise" else "act"): extra}
        row.update(timer(batch, c, h, w, extra, repeats))
        rows.append(row)
    torch_ms = _torch_ms(rows, repeats) if with_torch else None
    for row, ms in zip(rows, torch_ms or []):
        row["torch_ms"] = ms
    return rows


def format_rows(rows):
    """The rows as a Markdown table (ms; speed-ups against Paddle's own and PyTorch)."""
    lines = ["| layer | count | paddle ms | packed ms | compiled ms | vs paddle | torch ms | vs torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what = f"{r['kind']} {'x'.join(map(str, r['shape']))} " + (
            f"s{r['stride']}" if "stride" in r else str(r["act"]))
        packed = f"{r['packed_ms']:.2f}" if "packed_ms" in r else "-"
        torch_ms = f"{r['torch_ms']:.2f}" if "torch_ms" in r else "-"
        vs_torch = f"{r['torch_ms'] / r['compiled_ms']:.2f}x" if "torch_ms" in r else "-"
        lines.append(f"| {what} | {r['count']} | {r['paddle_ms']:.2f} | {packed} | "
                     f"{r['compiled_ms']:.2f} | {r['paddle_ms'] / r['compiled_ms']:.2f}x | "
                     f"{torch_ms} | {vs_torch} |")
    return "\n".join(lines)
