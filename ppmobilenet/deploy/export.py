"""Export a trained model for deployment, from one process:
  DIR/inference.json + inference.pdiparams          PIR program (Paddle Inference, paddle2onnx)
  DIR/lite/inference.pdmodel + inference.pdiparams  legacy ProgramDesc (Paddle Lite's opt reads only this)
  DIR/labels.txt, DIR/export_meta.json              labels and what a predictor needs without the config
and optionally DIR/lite/<model>_<target>.nb (opt) and DIR/inference.onnx, each checked numerically,
and DIR/inference_int8.onnx (INT8 post-training quantization calibrated on training images).
"""
import glob
import os
import shutil
import tempfile

import numpy as np

from .checks import LITE_TOL, ONNX_TOL, check_against_paddle, compare, sample_batch
from .errors import CheckFailed, DeployError
from .labels import label_file_from_config, read_labels, write_labels
from .meta import LABEL_FILE, LEGACY_FILES, PIR_FILES, make_meta, write_meta

EXPORT_DEFAULTS = {"softmax": True, "lite_targets": [], "lite_python": None, "onnx": False,
                   "quant_type": None, "check": True, "int8": False, "int8_calibration_images": 128}
# The ops tools/lite_predict.py reimplements with Pillow + numpy.
LITE_PREDICT_OPS = ("Resize", "CenterCrop", "ToTensor", "Normalize", "Transpose")
EXPORT_TOL = 1e-4  # oneDNN vs dygraph: ~1e-5 relative seen on V2 logits


def export_settings(cfg):
    """The Export section with defaults for keys an older config may lack."""
    out = dict(EXPORT_DEFAULTS)
    out.update({k: v for k, v in (cfg.get("Export") or {}).items() if v is not None or k in out})
    return out


def _wrap(model, softmax):
    import paddle

    class Exported(paddle.nn.Layer):
        """The trained network, plus the softmax the deployed graph ends with."""

        def __init__(self, net, with_softmax):
            super().__init__()
            self.net, self.with_softmax = net, with_softmax

        def forward(self, x):
            out = self.net(x)
            return paddle.nn.functional.softmax(out, axis=-1) if self.with_softmax else out

    wrapped = Exported(model, softmax)
    wrapped.eval()
    return wrapped


def _save_programs(wrapped, image_shape, tmp):
    import paddle
    spec = [paddle.static.InputSpec([None, *image_shape], "float32", name="x")]
    # full_graph=True: a whole static graph (the default SOT mode ignores input_spec).
    paddle.jit.save(paddle.jit.to_static(wrapped, input_spec=spec, full_graph=True),
                    os.path.join(tmp, "inference"))
    # Lite reads only the legacy ProgramDesc; this guard makes jit.save write it in-process.
    with paddle.pir_utils.DygraphOldIrGuard():
        paddle.jit.save(paddle.jit.to_static(wrapped, input_spec=spec, full_graph=True),
                        os.path.join(tmp, "lite", "inference"))


def _sample(cfg, image_shape, log):
    """Seeded noise in the normalized space, plus up to 4 real images from Infer.infer_imgs."""
    batch = sample_batch(image_shape)
    src = (cfg.get("Infer") or {}).get("infer_imgs")
    if src and os.path.exists(src):
        from .preprocess import build_preprocess, list_images, load_image, transform_ops
        try:
            pre = build_preprocess(transform_ops(cfg))
            imgs = np.stack([pre(load_image(p)) for p in list_images(src)[:4]])
            if imgs.shape[1:] == batch.shape[1:]:
                batch = np.concatenate([batch, imgs])
        except DeployError as e:
            log(f"export: check uses noise only ({e})")
    return batch


def _preprocess_ops(cfg, log):
    from .preprocess import transform_ops
    try:
        ops = transform_ops(cfg)
    except DeployError as e:
        log(f"export: warning: {e}; export_meta.json gets no preprocessing")
        return None
    odd = [next(iter(op)) for op in ops if next(iter(op)) not in LITE_PREDICT_OPS]
    if odd:
        log(f"export: warning: tools/lite_predict.py cannot reproduce {odd}; it handles "
            f"{', '.join(LITE_PREDICT_OPS)}")
    return ops


def _labels(cfg, class_num, label_file, log):
    path = label_file or label_file_from_config(cfg)
    if not path:
        log("export: no label file known (Infer.class_id_map_file / dataset label_file); "
            "predictions will show class ids only")
        return None
    return read_labels(path, class_num)


def export_model(cfg, save_dir=None, model=None, weights=None, softmax=None, lite_targets=None,
                 lite_python=None, onnx=None, quant_type=None, check=None, label_file=None,
                 int8=None, calibration_images=None, log=print):
    """-> report dict. cfg: the loaded config (plain dicts). Arguments override the Export
    section; weights default to Global.pretrained_model. int8 (implies onnx): also write
    inference_int8.onnx, calibrated on `calibration_images` (>= 100) DataLoader.Train images."""
    from ppmobilenet.models import build_model_from_arch
    import paddle

    settings = export_settings(cfg)
    g = cfg.get("Global") or {}
    arch = cfg["Arch"]
    save_dir = save_dir or g.get("save_inference_dir")
    if not save_dir:
        raise DeployError("config: Global.save_inference_dir is not set (or pass save_dir)")
    image_shape = list(g.get("image_shape") or [3, 224, 224])
    if len(image_shape) != 3:
        raise DeployError(f"config: Global.image_shape must be [C, H, W], got {image_shape}")
    softmax = settings["softmax"] if softmax is None else softmax
    check = settings["check"] if check is None else check
    quant_type = quant_type or settings["quant_type"]
    from .lite import parse_targets
    targets = parse_targets(settings["lite_targets"] if lite_targets is None else lite_targets)
    int8 = settings["int8"] if int8 is None else int8
    onnx = (settings["onnx"] if onnx is None else onnx) or bool(int8)
    calibration = None
    if int8:  # read the calibration images first: a bad data set fails before any file is written
        from .int8 import calibration_images as read_calibration
        calibration = read_calibration(cfg, calibration_images or settings["int8_calibration_images"])
    names = _labels(cfg, arch["class_num"], label_file, log)

    if model is None:
        model = build_model_from_arch(arch)
        weights = weights or g.get("pretrained_model")
        if weights:
            from .weights import load_weights
            load_weights(model, weights, own_dir=g.get("output_dir"), log=log)
            log(f"export: weights from {weights}")
        else:
            log("export: warning: no Global.pretrained_model - exporting freshly initialised weights")
    model.eval()
    wrapped = _wrap(model, softmax)

    os.makedirs(save_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=save_dir)
    report = {"save_dir": save_dir, "checks": [], "lite": {}, "onnx": None, "labels": None}
    try:
        _save_programs(wrapped, image_shape, tmp)
        sample = _sample(cfg, image_shape, log)
        with paddle.no_grad():
            ref = wrapped(paddle.to_tensor(sample)).numpy()
        # Both formats must reproduce dygraph before anything is converted from them.
        from .predictors import PaddlePredictor
        for legacy, what in ((False, "Paddle Inference (inference.json) vs dygraph"),
                             (True, "Paddle Inference (lite/inference.pdmodel) vs dygraph")):
            rep = compare(ref, PaddlePredictor(tmp, legacy=legacy).predict(sample), EXPORT_TOL, what)
            log(rep["line"])
            report["checks"].append(rep)
        stale = glob.glob(os.path.join(save_dir, "lite", "*.nb")) + \
            glob.glob(os.path.join(save_dir, "inference.onnx")) + \
            glob.glob(os.path.join(save_dir, "inference_int8.onnx"))
        for path in stale:  # from an earlier export to this folder; they no longer match
            os.remove(path)
            log(f"export: removed stale {path}")
        for name in PIR_FILES + LEGACY_FILES + ("lite/inference.pdiparams.info",):
            src = os.path.join(tmp, name)
            if os.path.exists(src):
                os.makedirs(os.path.dirname(os.path.join(save_dir, name)), exist_ok=True)
                os.replace(src, os.path.join(save_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if names:
        write_labels(os.path.join(save_dir, LABEL_FILE), names)
        report["labels"] = os.path.join(save_dir, LABEL_FILE)
    elif os.path.exists(os.path.join(save_dir, LABEL_FILE)):
        os.remove(os.path.join(save_dir, LABEL_FILE))
    from ppmobilenet.models.summary import count_macs
    meta = make_meta(arch, image_shape, softmax, _preprocess_ops(cfg, log), names,
                     paddle.__version__, macs=count_macs(model, tuple(image_shape[1:])))
    write_meta(save_dir, meta)
    log(f"export: {save_dir}: {', '.join(PIR_FILES)}, {', '.join(LEGACY_FILES)}"
        + (f", {LABEL_FILE}" if names else "") + ", export_meta.json")

    if targets:
        report["lite"] = _lite(save_dir, targets, lite_python or settings["lite_python"],
                               quant_type, check, sample, report, log)
    if onnx:
        from .onnx import convert_onnx
        from .predictors import OnnxPredictor
        report["onnx"] = convert_onnx(save_dir, log=log)
        if check:
            try:
                report["checks"].append(check_against_paddle(
                    save_dir, OnnxPredictor(report["onnx"]), sample, ONNX_TOL,
                    "ONNX Runtime vs Paddle Inference", log))
            except CheckFailed as e:
                _drop(save_dir, "onnx", [report["onnx"]])
                raise CheckFailed(f"{e}\nremoved {report['onnx']}") from None
    if int8:
        report["int8"] = _int8(save_dir, report["onnx"], calibration, sample, log)
    return report


def _int8(save_dir, onnx_file, calibration, sample, log):
    """Quantize, record in export_meta.json, and compare with the fp32 ONNX model on the check
    batch. Probabilities move with the rounding, so this reports rather than fails, except on
    outputs that are not finite."""
    from .int8 import quantize_onnx
    from .meta import read_meta
    from .predictors import OnnxPredictor
    path = quantize_onnx(onnx_file, calibration, log=log)
    ref = OnnxPredictor(onnx_file).predict(sample)
    got = OnnxPredictor(path).predict(sample)
    if not np.isfinite(got).all():
        _drop_int8(save_dir, path)
        raise CheckFailed(f"INT8 model {path}: non-finite outputs on the check batch; removed it")
    diff = float(np.abs(got - ref).max())
    agree = int((got.argmax(1) == ref.argmax(1)).sum())
    log(f"INT8 ONNX Runtime vs fp32 ONNX Runtime: max abs diff {diff:.3g}, top-1 agrees on "
        f"{agree}/{len(ref)} (the check batch is mostly noise; tools/benchmark.py measures accuracy "
        f"on real images)")
    meta = read_meta(save_dir)
    meta["int8"] = {"file": os.path.basename(path), "calibration_images": int(len(calibration)),
                    "scheme": "QDQ, int8 weights per channel, uint8 activations (min/max)"}
    write_meta(save_dir, meta)
    return {"file": path, "max_abs_diff": diff, "top1_agree": agree, "samples": int(len(ref))}


def _drop_int8(save_dir, path):
    if os.path.exists(path):
        os.remove(path)


def _drop(save_dir, key, paths):
    from .meta import read_meta
    for path in paths:
        if os.path.exists(path):
            os.remove(path)
    meta = read_meta(save_dir)
    meta[key] = {} if key == "lite" else None
    write_meta(save_dir, meta)


def _lite(save_dir, targets, lite_python, quant_type, check, sample, report, log):
    from .lite import convert_lite
    from .lite_env import find_lite_python
    from .predictors import LitePredictor
    runtime = find_lite_python(lite_python)
    log(f"lite: Paddle Lite {runtime.lite_version} under {runtime.python} ({runtime.source})")
    done = convert_lite(save_dir, targets, runtime=runtime, quant_type=quant_type, log=log)
    if not check:
        return done
    nb, temporary = done.get("x86"), False
    if nb is None:  # only an x86 .nb can be checked here; make one for the check alone
        nb = convert_lite(save_dir, ["x86"], runtime=runtime, quant_type=quant_type,
                          log=log, record=False)["x86"]
        temporary = True
    try:
        report["checks"].append(check_against_paddle(
            save_dir, LitePredictor(nb, runtime=runtime), sample, LITE_TOL,
            "Paddle Lite x86 .nb vs Paddle Inference", log))
    except DeployError as e:  # failed or crashed in its check: such a .nb must not ship
        _drop(save_dir, "lite", list(done.values()))
        raise type(e)(f"{e}\nremoved {', '.join(done.values())}") from None
    finally:
        if temporary:
            os.remove(nb)
    if "arm" in done:
        log("lite: the arm .nb converted (every op has an ARM kernel); its numerics can only be "
            "checked on an ARM device")
    return done
