"""Bodies of tools/export.py, tools/infer.py and tools/provision_lite.py.

Exit codes: 0 done; 2 bad config or arguments (the message names the key); 1 a file, weight,
conversion or numeric check at fault (the message names it and gives the numbers).
"""
import argparse
import json
import os
import sys


def _config_args(parser, required):
    parser.add_argument("-c", "--config", required=required, help="YAML config file")
    parser.add_argument("-o", "--override", action="extend", nargs="+", default=None,
                        metavar="KEY=VALUE", help="override a config value: Section.key=value")
    return parser


def _run(body, args):
    from ppmobilenet.errors import exit_code
    return exit_code(lambda: body(args))


_CPU_SET = {}  # what configure_cpu set (not the user)


def _threads_first():
    # Paddle reads OMP_NUM_THREADS and MKL's settings at import: before anything imports paddle.
    from ppmobilenet.cpu import configure_cpu
    _CPU_SET.update(configure_cpu())


def _user_threads():
    """OMP_NUM_THREADS when the user set it; None (the predictor's own choice) otherwise."""
    if "OMP_NUM_THREADS" in _CPU_SET or not os.environ.get("OMP_NUM_THREADS"):
        return None
    return int(os.environ["OMP_NUM_THREADS"])


# ---------- export ----------

def export_main(doc, argv=None):
    _threads_first()
    p = _config_args(argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter), required=True)
    p.add_argument("--lite", default=None, metavar="TARGETS",
                   help="convert with Paddle Lite's opt for these targets: arm,x86 "
                        "[Export.lite_targets]")
    p.add_argument("--lite-python", default=None,
                   help="a Python 3.8-3.10 with paddlelite [Export.lite_python, "
                        "$PPMOBILENET_LITE_PYTHON, the provisioned venv]")
    p.add_argument("--quant-type", default=None, choices=("QUANT_INT8", "QUANT_INT16"),
                   help="opt's weight-only quantisation of the arm .nb (about 3x smaller; not checkable here)")
    p.add_argument("--onnx", action="store_true", default=None,
                   help="also write inference.onnx (paddle2onnx) and check it [Export.onnx]")
    p.add_argument("--int8", action="store_true", default=None,
                   help="also write inference_int8.onnx: INT8 post-training quantization "
                        "calibrated on DataLoader.Train images (implies --onnx) [Export.int8]")
    p.add_argument("--calibration-images", type=int, default=None, metavar="N",
                   help="training images for the INT8 calibration, >= 100 "
                        "[Export.int8_calibration_images, 128]")
    args = p.parse_args(argv)

    def body(a):
        from ppmobilenet.config import load_config
        from .export import export_model
        cfg = load_config(a.config, a.override)
        export_model(cfg, lite_targets=a.lite, lite_python=a.lite_python, onnx=a.onnx,
                     quant_type=a.quant_type, int8=a.int8, calibration_images=a.calibration_images)
    return _run(body, args)


# ---------- infer ----------

def _labels_for(a, cfg, export_dir, class_num):
    from .labels import label_file_from_config, read_labels
    from .meta import LABEL_FILE
    path = a.labels or ((cfg.get("Infer") or {}).get("class_id_map_file") if cfg else None)
    if not path and export_dir and os.path.isfile(os.path.join(export_dir, LABEL_FILE)):
        path = os.path.join(export_dir, LABEL_FILE)
    if not path and cfg:
        path = label_file_from_config(cfg)
    return read_labels(path, class_num) if path else None


def infer_main(doc, argv=None):
    _threads_first()
    from .predictors import BACKENDS, DEFAULT_BACKEND
    p = _config_args(argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter), required=False)
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="auto: onnx when onnxruntime is installed and the export has "
                        "inference.onnx (the faster CPU path), else paddle [auto]")
    p.add_argument("--int8", action="store_true",
                   help="run the export's inference_int8.onnx (tools/export.py --int8) with onnxruntime")
    p.add_argument("--input", help="image file, folder or list file [Infer.infer_imgs]")
    p.add_argument("--model-dir", help="export folder [Global.save_inference_dir]")
    p.add_argument("--checkpoint", help="weights for --backend dygraph [Global.pretrained_model]")
    p.add_argument("--nb", help="an x86 .nb for --backend lite [the export's lite/*_x86.nb]")
    p.add_argument("--onnx-file", help="for --backend onnx [the export's inference.onnx]")
    p.add_argument("--lite-python", help="a Python with paddlelite [$PPMOBILENET_LITE_PYTHON, ...]")
    p.add_argument("--labels", help="`id name` label file [Infer.class_id_map_file, the export's labels.txt]")
    p.add_argument("--topk", type=int, help="[Infer.topk]")
    p.add_argument("--batch-size", type=int, help="[Infer.batch_size]")
    p.add_argument("--threads", type=int, help="CPU threads for paddle / onnx [$OMP_NUM_THREADS "
                   "if you set it, else all cores, or 1 for a batch too small to share]")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)

    def body(a):
        from .classify import classify, format_table
        from .errors import DeployError
        from .meta import read_meta
        from .predictors import create_predictor
        from .preprocess import build_preprocess, list_images, transform_ops
        cfg = None
        if a.config:
            from ppmobilenet.config import load_config
            cfg = load_config(a.config, a.override)
        elif a.override:
            raise DeployError("-o needs -c CONFIG")
        infer = (cfg or {}).get("Infer") or {}
        export_dir = a.model_dir or ((cfg or {}).get("Global") or {}).get("save_inference_dir")
        if a.backend != "dygraph" and not (a.backend == "lite" and a.nb) and not export_dir:
            raise DeployError(f"--backend {a.backend} needs --model-dir (an export folder) or -c")
        meta = read_meta(export_dir) if a.backend != "dygraph" and export_dir and \
            not (a.backend == "lite" and a.nb and not os.path.isdir(export_dir)) else None
        if cfg is None and meta is None:
            raise DeployError(f"--backend {a.backend} without -c needs an export folder with "
                              f"export_meta.json (--model-dir)")
        ops = transform_ops(cfg) if cfg else meta.get("preprocess")
        if not ops:
            raise DeployError(f"{export_dir}/export_meta.json records no preprocessing; pass -c CONFIG")
        src = a.input or infer.get("infer_imgs")
        if not src:
            raise DeployError("no images: pass --input or set Infer.infer_imgs")
        class_num = cfg["Arch"]["class_num"] if cfg else meta["model"]["class_num"]
        labels = _labels_for(a, cfg, export_dir if meta else None, class_num)
        threads = a.threads or _user_threads()
        backend, onnx_file = a.backend, a.onnx_file
        if a.int8:
            from .int8 import INT8_FILE
            if backend not in ("auto", "onnx"):
                raise DeployError(f"--int8 runs on onnxruntime; it cannot go with --backend {backend}")
            backend, onnx_file = "onnx", onnx_file or os.path.join(export_dir, INT8_FILE)
            if not os.path.isfile(onnx_file):
                raise DeployError(f"{onnx_file}: not found (export with tools/export.py --int8)")
        predictor = create_predictor(backend, export_dir=export_dir, cfg=cfg,
                                     checkpoint=a.checkpoint, threads=threads,
                                     lite_python=a.lite_python, nb=a.nb, onnx_file=onnx_file)
        shown = predictor.backend + (" (auto)" if a.backend == "auto" else "") + \
            (" int8" if a.int8 else "")
        results = classify(predictor, list_images(src), build_preprocess(ops),
                           batch_size=a.batch_size or infer.get("batch_size", 8),
                           topk=min(a.topk or infer.get("topk", 5), class_num), labels=labels)
        if a.json:
            print(json.dumps({"backend": predictor.backend, "requested": a.backend,
                              "int8": bool(a.int8), "results": results}, indent=2))
        else:
            print(format_table(results, shown))
    return _run(body, args)


# ---------- provision ----------

def provision_main(doc, argv=None):
    from .errors import DeployError
    from .lite_env import default_venv_dir, provision
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", default=None, help=f"where to build it [{default_venv_dir()}]")
    p.add_argument("--python", default=None, help="base interpreter (3.8-3.10) [searched]")
    args = p.parse_args(argv)
    try:
        rt = provision(args.venv, args.python, log=lambda m: print(m, file=sys.stderr))
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(rt.python)
    return 0
