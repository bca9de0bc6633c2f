"""Export a trained model for deployment, from one process:
  DIR/inference.json + inference.pdiparams          PIR program (Paddle Inference, paddle2onnx)
  DIR/lite/inference.pdmodel + inference.pdiparams  legacy ProgramDesc (Paddle Lite's opt reads only this)
  DIR/labels.txt, DIR/export_meta.json              labels, what a predictor needs without the config,
                                                    and the sha256 of every file
and optionally DIR/lite/<model>_<target>.nb (opt) and DIR/inference.onnx, each checked numerically,
and DIR/inference_int8.onnx (INT8 post-training quantization calibrated on training images).

An export is a transaction. What it needs (the weights or Export.allow_random_weights, the Lite
interpreter, the onnx packages, the calibration images, the label file) is checked before
anything is written; the whole export is then built and checked in a hidden folder beside DIR
and swapped in by ppmobilenet.io.swap_folder only when every check passed. A failure, a missing
prerequisite or a kill leaves the previous export in DIR exactly as it was.
"""
import os
import shutil

import numpy as np
import paddle

from ..config import ConfigError
from ..data import load_image
from ..errors import PPMobileNetError
from ..io import folder_files, new_folder_beside, recover_folder, remove_quietly, swap_folder, write_labels
from ..models import build_model_from_arch, count_macs
from ..weights import load_weights
from .checks import LITE_TOL, ONNX_TOL, check_against_paddle, compare, sample_batch
from .errors import CheckFailed, DeployError
from .int8 import INT8_FILE, calibration_images as read_calibration, quantize_onnx
from .labels import label_file_from_config, read_labels
from .lite import convert_lite, parse_targets
from .lite_env import find_lite_python
from .meta import LABEL_FILE, LEGACY_FILES, META_FILE, PIR_FILES, make_meta, read_meta, write_meta
from .onnx import convert_onnx, require_onnx
from .predictors import ONNX_FILE, LitePredictor, OnnxPredictor, PaddlePredictor
from .preprocess import build_preprocess, list_images, transform_ops

# The ops tools/lite_predict.py reimplements with Pillow + numpy.
LITE_PREDICT_OPS = ("Resize", "CenterCrop", "ToTensor", "Normalize", "Transpose")
EXPORT_TOL = 1e-4  # oneDNN vs dygraph: ~1e-5 relative seen on V2 logits
# What an export writes: a folder holding anything else is not replaced by one.
EXPORT_FILES = set(PIR_FILES + LEGACY_FILES) | {"lite/inference.pdiparams.info", LABEL_FILE, META_FILE,
                                                 ONNX_FILE, INT8_FILE}


class Exported(paddle.nn.Layer):
    """The trained network, plus the softmax the deployed graph ends with."""

    def __init__(self, net, with_softmax):
        super().__init__()
        self.net, self.with_softmax = net, with_softmax

    def forward(self, x):
        out = self.net(x)
        return paddle.nn.functional.softmax(out, axis=-1) if self.with_softmax else out


def _save_programs(wrapped, image_shape, tmp):
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
    src = cfg["Infer"]["infer_imgs"]
    if src and os.path.exists(src):
        try:
            pre = build_preprocess(transform_ops(cfg))
            imgs = np.stack([pre(load_image(p)) for p in list_images(src)[:4]])
            if imgs.shape[1:] == batch.shape[1:]:
                batch = np.concatenate([batch, imgs])
        except DeployError as e:
            log(f"export: check uses noise only ({e})")
    return batch


def _preprocess_ops(cfg, log):
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
    path = label_file_from_config(cfg) if label_file is None else label_file
    if not path:
        log("export: no label file known (Infer.class_id_map_file / dataset label_file); "
            "predictions will show class ids only")
        return None
    return read_labels(path, class_num)


def export_model(cfg, save_dir=None, model=None, weights=None, softmax=None, lite_targets=None,
                 lite_python=None, onnx=None, quant_type=None, check=True, label_file=None,
                 int8=None, calibration_images=None, log=print):
    """-> report dict. cfg: the validated config. Arguments override the Export section;
    check: compare every converted model with Paddle Inference (a mismatch fails the export);
    weights default to Global.pretrained_model (none at all: a ConfigError unless
    Export.allow_random_weights); label_file to the one the config knows (label_file_from_config),
    False for none. int8 (implies onnx): also write inference_int8.onnx, calibrated on
    `calibration_images` (>= 100) DataLoader.Train images. Nothing in save_dir changes unless
    the whole export succeeds (see the module's doc)."""
    settings, g, arch = cfg["Export"], cfg["Global"], cfg["Arch"]
    save_dir = os.path.abspath(save_dir or g["save_inference_dir"])
    image_shape = list(g["image_shape"])
    softmax = settings["softmax"] if softmax is None else softmax
    quant_type = quant_type or settings["quant_type"]
    targets = parse_targets(settings["lite_targets"] if lite_targets is None else lite_targets)
    int8 = settings["int8"] if int8 is None else int8
    onnx = (settings["onnx"] if onnx is None else onnx) or bool(int8)

    # every prerequisite, before anything is written
    if model is None:
        weights = weights or g["pretrained_model"]
        if not weights and not settings["allow_random_weights"]:
            raise ConfigError("Global.pretrained_model is not set: an export needs the trained "
                              "weights (-o Global.pretrained_model=output/demo/best_model); to "
                              "export freshly initialised weights on purpose, set "
                              "Export.allow_random_weights=true")
    recover_folder(save_dir)             # an export killed mid-swap: its complete folder first
    _check_target(save_dir)
    runtime = find_lite_python(lite_python or settings["lite_python"]) if targets else None
    if onnx:
        require_onnx(int8=bool(int8))
    calibration = None
    if int8:
        calibration = read_calibration(cfg, calibration_images or settings["int8_calibration_images"])
    names = _labels(cfg, arch["class_num"], label_file, log)
    if model is None:
        model = build_model_from_arch(arch)
        if weights:
            load_weights(model, weights)
            log(f"export: weights from {weights}")
        else:
            log("export: warning: no Global.pretrained_model - exporting freshly initialised "
                "weights (Export.allow_random_weights)")

    stage = new_folder_beside(save_dir)
    try:
        def staged_log(message):           # the files' names once the export is in place
            log(message.replace(stage, save_dir))
        report = _build(cfg, stage, model, image_shape, softmax, names, targets, runtime,
                        quant_type, check, onnx, calibration, staged_log)
        swap_folder(stage, save_dir)
    except PPMobileNetError as e:
        raise type(e)(f"{str(e).replace(stage, save_dir)}\nexport: {save_dir} was left as it "
                      "was") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)     # gone already after the swap
    log(f"export: {save_dir} is complete: {len(read_meta(save_dir, verify=False)['files'])} files "
        f"and their sha256 in {META_FILE}")
    return _moved(report, stage, save_dir)


def _check_target(save_dir):
    """save_dir is replaced as a whole: refuse one holding anything an export does not write."""
    if not os.path.lexists(save_dir):
        return
    if not os.path.isdir(save_dir):
        raise DeployError(f"Global.save_inference_dir={save_dir} is a file, not a folder")
    foreign = [rel for rel in folder_files(save_dir)
               if rel not in EXPORT_FILES and not (rel.startswith("lite/") and rel.endswith(".nb")
                                                   and rel.count("/") == 1)]
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise DeployError(f"Global.save_inference_dir={save_dir} holds files an export does not "
                          f"write ({', '.join(foreign[:5])}{more}); an export replaces the whole "
                          "folder, so choose a new or empty folder, or move those files")


def _build(cfg, stage, model, image_shape, softmax, names, targets, runtime, quant_type, check,
           onnx, calibration, log):
    """The whole export in `stage`, every check run -> the report (paths in `stage`)."""
    model.eval()
    wrapped = Exported(model, softmax)
    wrapped.eval()
    report = {"save_dir": stage, "checks": [], "lite": {}, "onnx": None, "labels": None}
    _save_programs(wrapped, image_shape, stage)
    sample = _sample(cfg, image_shape, log)
    with paddle.no_grad():
        ref = wrapped(paddle.to_tensor(sample)).numpy()
    # Both formats must reproduce dygraph before anything is converted from them.
    for legacy, what in ((False, "Paddle Inference (inference.json) vs dygraph"),
                         (True, "Paddle Inference (lite/inference.pdmodel) vs dygraph")):
        rep = compare(ref, PaddlePredictor(stage, legacy=legacy).predict(sample), EXPORT_TOL, what)
        log(rep["line"])
        report["checks"].append(rep)
    if names:
        write_labels(os.path.join(stage, LABEL_FILE), names)
        report["labels"] = os.path.join(stage, LABEL_FILE)
    meta = make_meta(cfg["Arch"], image_shape, softmax, _preprocess_ops(cfg, log), names,
                     paddle.__version__, macs=count_macs(model, tuple(image_shape[1:])))
    write_meta(stage, meta)
    log(f"export: {stage}: {', '.join(PIR_FILES)}, {', '.join(LEGACY_FILES)}"
        + (f", {LABEL_FILE}" if names else "") + ", export_meta.json")
    if targets:
        report["lite"] = _lite(stage, targets, None, quant_type, check, sample, report, log,
                               runtime=runtime, drop=False)
    if onnx:
        report["onnx"] = convert_onnx(stage, log=log)
        if check:
            report["checks"].append(check_against_paddle(
                stage, OnnxPredictor(report["onnx"]), sample, ONNX_TOL,
                "ONNX Runtime vs Paddle Inference", log))
    if calibration is not None:
        report["int8"] = _int8(stage, report["onnx"], calibration, sample, log)
    write_meta(stage, read_meta(stage, verify=False))   # the files as they will ship
    return report


def _moved(value, stage, save_dir):
    """The report with the staging folder's paths turned into the export's."""
    if isinstance(value, str):
        return save_dir + value[len(stage):] if value == stage or value.startswith(stage + os.sep) \
            else value
    if isinstance(value, dict):
        return {k: _moved(v, stage, save_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, stage, save_dir) for v in value]
    return value


def _int8(save_dir, onnx_file, calibration, sample, log):
    """Quantize, record in export_meta.json, and compare with the fp32 ONNX model on the check
    batch. Probabilities move with the rounding, so this reports rather than fails, except on
    outputs that are not finite."""
    path = quantize_onnx(onnx_file, calibration, log=log)
    ref = OnnxPredictor(onnx_file).predict(sample)
    got = OnnxPredictor(path).predict(sample)
    if not np.isfinite(got).all():
        remove_quietly(path)
        raise CheckFailed(f"INT8 model {path}: non-finite outputs on the check batch; removed it")
    diff = float(np.abs(got - ref).max())
    agree = int((got.argmax(1) == ref.argmax(1)).sum())
    log(f"INT8 ONNX Runtime vs fp32 ONNX Runtime: max abs diff {diff:.3g}, top-1 agrees on "
        f"{agree}/{len(ref)} (the check batch is mostly noise; tools/benchmark.py measures accuracy "
        f"on real images)")
    meta = read_meta(save_dir, verify=False)
    meta["int8"] = {"file": os.path.basename(path), "calibration_images": int(len(calibration)),
                    "scheme": "QDQ, int8 weights per channel, uint8 activations (min/max)"}
    write_meta(save_dir, meta)
    return {"file": path, "max_abs_diff": diff, "top1_agree": agree, "samples": int(len(ref))}


def _drop(save_dir, key, paths):
    for path in paths:
        remove_quietly(path)
    meta = read_meta(save_dir, verify=False)
    meta[key] = {} if key == "lite" else None
    write_meta(save_dir, meta)


def _lite(save_dir, targets, lite_python, quant_type, check, sample, report, log, runtime=None,
          drop=True):
    """Convert and check in `save_dir`; drop: on a failed check remove the .nb files from it
    (export_model does not need to: its whole staging folder goes)."""
    runtime = runtime or find_lite_python(lite_python)
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
        if not drop:
            raise
        _drop(save_dir, "lite", list(done.values()))
        raise type(e)(f"{e}\nremoved {', '.join(done.values())}") from None
    finally:
        if temporary:
            os.remove(nb)
    if "arm" in done:
        log("lite: the arm .nb converted (every op has an ARM kernel); its numerics can only be "
            "checked on an ARM device")
    return done
