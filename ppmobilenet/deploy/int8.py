"""INT8 post-training quantization of an export's ONNX model (onnxruntime.quantization), for
`tools/export.py --int8`: DIR/inference_int8.onnx next to DIR/inference.onnx.

Static QDQ: weights int8 per output channel, activations uint8 calibrated (min/max) on real
training images preprocessed as in evaluation. Convolutions, their activations (Relu; Clip is
relu6) and V2's shortcut Adds are quantized, so onnxruntime folds each Conv + Relu into one int8
kernel; the classifier and the softmax stay float. It pays off from about MobileNetV1 x0.5 at
224x224 up (x1.0: ~2.7x at batch 8 seen); x0.25's 8-256 channels gain nothing.

The stem (the first standard conv and the first depthwise conv) stays float by default. The
first depthwise conv reads the stem's ReLU output, whose channels differ in range by ~10x, through
one per-tensor uint8 scale; each of its filters sees one channel only, so the narrow channels
keep a few levels. Quantizing that one layer alone cost the trained demo model 2.8 of its 3.3
points of top-1; keeping both layers float costs nothing measurable (docs/benchmarks.md), and
they are ~2.5% of MobileNetV1 x1.0's MACs.
"""
import copy
import os
import tempfile

import numpy as np

from ..cpu import cpu_flags
from ..data import build_dataset
from ..io import replace_atomic
from .errors import DeployError
from .preprocess import transform_ops

INT8_FILE = "inference_int8.onnx"
MIN_CALIBRATION = 100
DEFAULT_CALIBRATION = 128
OP_TYPES = ("Conv", "Relu", "Clip", "Add")


def has_vnni():
    """u8 x s8 products can saturate in the int8 kernels of CPUs without VNNI; there the
    weights use 7 bits (reduce_range), as onnxruntime recommends."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


class _Batches:
    """onnxruntime's CalibrationDataReader protocol: get_next() -> {input: batch} or None."""

    def __init__(self, name, images, batch):
        self._items = [{name: np.ascontiguousarray(images[i:i + batch], dtype="float32")}
                       for i in range(0, len(images), batch)]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._items)


def stem_nodes(onnx_model):
    """Names of the first standard Conv and the first depthwise Conv (group == input channels
    > 1), in graph order: the layers kept in float (see the module's docstring)."""
    first_conv = first_dw = None
    for node in onnx_model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group == 1 and first_conv is None:
            first_conv = node.name
        elif group > 1 and first_dw is None:
            first_dw = node.name
        if first_conv and first_dw:
            break
    return [n for n in (first_conv, first_dw) if n]


def quantize_onnx(onnx_file, images, out_file=None, per_channel=True, batch=16, op_types=OP_TYPES,
                  keep_stem_float=True, log=print):
    """onnx_file: fp32 model with one input; images [N, C, H, W] float32, N >= 100, preprocessed
    as in evaluation. -> the INT8 model's path (written under a temp name, then moved)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quant_pre_process, quantize_static)
    except ImportError as e:
        raise DeployError(f"--int8 needs onnxruntime and onnx ({e}): pip install onnxruntime onnx "
                          f"(or pip install 'ppmobilenet[onnx]')") from None
    if len(images) < MIN_CALIBRATION:
        raise DeployError(f"INT8 calibration needs at least {MIN_CALIBRATION} images, got "
                          f"{len(images)}")
    if not os.path.isfile(onnx_file):
        raise DeployError(f"ONNX model {onnx_file}: not found (export with --onnx)")
    out_file = out_file or os.path.join(os.path.dirname(onnx_file), INT8_FILE)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    name = ort.InferenceSession(onnx_file, opts, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    tmp = tempfile.mkdtemp(prefix=".tmp-int8-", dir=os.path.dirname(os.path.abspath(out_file)))
    try:
        pre = os.path.join(tmp, "pre.onnx")
        # folds BatchNormalization into Conv first: a Conv + BN pair would keep BN in float
        # between two quantize / dequantize pairs
        quant_pre_process(onnx_file, pre, skip_symbolic_shape=True)
        kept = stem_nodes(onnx.load(pre)) if keep_stem_float else []
        staged = os.path.join(tmp, "int8.onnx")
        quantize_static(pre, staged, _Batches(name, images, batch), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), nodes_to_exclude=kept,
                        per_channel=per_channel,
                        reduce_range=not has_vnni(), activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        replace_atomic(staged, out_file)
    except DeployError:
        raise
    except Exception as e:  # onnxruntime.quantization raises assorted types
        raise DeployError(f"INT8 quantization of {onnx_file} failed: {type(e).__name__}: {e}") from None
    finally:
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    log(f"int8: {out_file} ({os.path.getsize(out_file)} bytes; {len(images)} calibration images, "
        f"QDQ, {'per-channel' if per_channel else 'per-tensor'} int8 weights, uint8 activations"
        f"{'; float stem: ' + ', '.join(kept) if kept else ''}"
        f"{', 7-bit weights (no VNNI)' if not has_vnni() else ''})")
    return out_file


def calibration_images(cfg, count=DEFAULT_CALIBRATION):
    """`count` images of the config's training set (DataLoader.Train.dataset), evenly spaced so
    every class shows up, preprocessed with the eval transforms (what the deployed model sees)."""
    count = int(count)
    if count < MIN_CALIBRATION:
        raise DeployError(f"INT8 calibration needs at least {MIN_CALIBRATION} images, got {count}")
    c = copy.deepcopy(cfg)
    c["DataLoader"]["Train"]["transforms"] = transform_ops(cfg)
    # a few images, each read once and transformed on its own: no cache, no batch transforms
    c["DataLoader"]["Train"]["dataset"].update(cache_images=False, transforms_on_batch=False)
    ds = build_dataset(c, "Train")
    n = len(ds)
    if n < MIN_CALIBRATION:
        raise DeployError(f"DataLoader.Train has {n} images; INT8 calibration needs at least "
                          f"{MIN_CALIBRATION}")
    idx = np.linspace(0, n - 1, min(count, n)).round().astype(int)
    return np.stack([np.asarray(ds[int(i)][0], dtype="float32") for i in idx])


def top1(onnx_file, images, labels, threads=None, batch=64):
    """Top-1 accuracy (0..1) of an ONNX classifier on preprocessed images."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    s = ort.InferenceSession(onnx_file, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: images[i:i + batch]})[0].argmax(1)
                           for i in range(0, len(images), batch)])
    return float((pred == np.asarray(labels)).mean())
