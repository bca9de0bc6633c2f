"""INT8 for the benchmark: the ONNX quantization itself lives in ppmobilenet.deploy.int8
(tools/export.py --int8); here only the emulation of Lite's weight-only quantization."""
import numpy as np

from ppmobilenet.deploy.int8 import quantize_onnx, top1  # noqa: F401  (re-exported)


def fake_quant_weights(state, bits=8):
    """Weight-only quantization as Lite's opt QUANT_INT8 stores it (symmetric, abs-max per
    output channel), rounded and scaled back: {name: array} -> {name: array}. Lite's x86
    runtime cannot run a weight-quantised .nb (its outputs are garbage), so this emulation is
    how the accuracy of the ARM .nb's weights is measured here. Conv weights [out, in, kh, kw]
    are scaled per out; fc weights [in, out] per out; BN statistics and biases stay float."""
    qmax = 2 ** (bits - 1) - 1
    out = {}
    for k, w in state.items():
        w = np.asarray(w)
        if w.ndim == 4:
            s = np.abs(w).reshape(w.shape[0], -1).max(1).reshape(-1, 1, 1, 1) / qmax
        elif w.ndim == 2:
            s = np.abs(w).max(0, keepdims=True) / qmax
        else:
            out[k] = w
            continue
        s = np.where(s == 0, 1.0, s)
        out[k] = (np.clip(np.round(w / s), -qmax, qmax) * s).astype(w.dtype)
    return out
