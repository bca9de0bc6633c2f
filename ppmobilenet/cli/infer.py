"""Classify images (files, folders - class folders too, searched recursively - or list files)
with any of four backends.

  python tools/infer.py output/demo/inference photos/ more.jpg       # MODEL_DIR INPUT...
  python tools/infer.py -c configs/demo.yaml --backend paddle --input img.png
  python tools/infer.py --model-dir output/demo/inference --backend onnx --input photos/ --json
  python tools/infer.py -c configs/demo.yaml --backend dygraph --checkpoint output/demo/best_model --input list.txt
  python tools/infer.py -c configs/demo.yaml --backend lite --input photos/       # the x86 .nb

Backends: auto (the default: onnx when onnxruntime is installed and the export has
inference.onnx, else paddle - the faster CPU path, see docs/benchmarks.md), dygraph (config +
checkpoint), paddle (Paddle Inference on the export, oneDNN), lite (the export's x86 .nb in Paddle
Lite's runtime), onnx (onnxruntime; --int8 runs the export's inference_int8.onnx). All use the config's
eval preprocessing (Infer.transforms, else DataLoader.Eval.transforms), or without -c the one
recorded in the export's export_meta.json. Predictions show the class names (--labels, the
export's labels.txt, or the config's label file); --ids shows the class ids alone.
An image that cannot be read is reported (on stderr, and under "failed" with --json) and the
others are classified all the same.

Exit codes: 0 done; 2 bad config or arguments (the message names the key); 1 a file, weight or
export at fault (the message names it), or some images could not be read.
"""
import argparse
import json
import os
import sys

from ..board import positive_int
from .common import add_config_args, command_parser, run, user_threads



def _parser(backends, default_backend):
    p = add_config_args(command_parser(__doc__), required=False)
    p.add_argument("paths", nargs="*", metavar="[MODEL_DIR] INPUT",
                   help="an export folder (first; else --model-dir or -c's Global.save_inference_dir), "
                        "then image files, folders or list files [--input, Infer.infer_imgs]")
    p.add_argument("--backend", default=default_backend, choices=backends,
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
    p.add_argument("--ids", action="store_true", help="show the class ids only, not the class names")
    p.add_argument("--topk", type=positive_int, help="[Infer.topk]")
    p.add_argument("--batch-size", type=positive_int, help="[Infer.batch_size]")
    p.add_argument("--threads", type=positive_int, help="CPU threads for paddle / onnx [$OMP_NUM_THREADS "
                   "if you set it, else all cores, or 1 for a batch too small to share]")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _model_dir_and_inputs(a, is_export):
    """The positional form `MODEL_DIR INPUT...` beside the flags -> (model folder or None, the
    argument that named it, the inputs). The first word is the model folder when it is an export
    folder, or when nothing else can name one (no --model-dir, no -c)."""
    words = list(a.paths)
    # -o takes every word after it (nargs="+"): a word without "=" is an input, not an override
    if a.override:
        words += [w for w in a.override if "=" not in w]
        a.override = [w for w in a.override if "=" in w] or None
    model_dir, source = a.model_dir, "--model-dir"
    if words and model_dir is None and (is_export(words[0]) or (not a.config and a.backend != "dygraph")):
        model_dir, source = words.pop(0), "MODEL_DIR"
    return model_dir, source, ([a.input] if a.input else []) + words


def _folder_images(root, error):
    """The images of a folder and of its subfolders (class folders), sorted; hidden ones left out."""
    from ..io import IMAGE_EXTENSIONS, images_in_folder
    found = []
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += images_in_folder(folder)
    if not found:
        raise error(f"input folder {root}: no images in it or in its subfolders ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def _input_images(sources, error):
    from ..deploy.preprocess import list_images
    found = []
    for src in sources:
        found += _folder_images(src, error) if os.path.isdir(src) else list_images(src)
    return found


def _classify_readable(classify, predictor, paths, preprocess, **kwargs):
    """classify() over the images that can be read -> (results, [{"image", "error"}]). The
    images are opened one by one only after a batch failed: a clean run pays nothing for it."""
    from ..data import DataError, load_image
    try:
        return classify(predictor, paths, preprocess, **kwargs), []
    except DataError:
        pass
    failed = []
    for path in paths:
        try:
            load_image(path)
        except DataError as e:
            failed.append({"image": path, "error": str(e)})
    bad = {f["image"] for f in failed}
    good = [p for p in paths if p not in bad]
    return (classify(predictor, good, preprocess, **kwargs) if good else []), failed


def _labels_for(a, cfg, export_dir, class_num):
    """--labels, else Infer.class_id_map_file, else the export's labels.txt, else what the
    config's data sets name."""
    from ..deploy.labels import label_file_from_config, read_labels
    from ..deploy.meta import LABEL_FILE
    path = a.labels or (cfg["Infer"]["class_id_map_file"] if cfg else None)
    if not path and export_dir and os.path.isfile(os.path.join(export_dir, LABEL_FILE)):
        path = os.path.join(export_dir, LABEL_FILE)
    if not path and cfg:
        path = label_file_from_config(cfg)
    return read_labels(path, class_num) if path else None


def main(argv=None):
    return run(lambda: _infer(argv))


def _infer(argv):
    from ..deploy.runtimes import BACKENDS, DEFAULT_BACKEND
    a = _parser(BACKENDS, DEFAULT_BACKEND).parse_args(argv)
    from ..config import SCHEMA, load_config
    from ..deploy.classify import classify, format_table
    from ..deploy.errors import DeployError
    from ..deploy.meta import META_FILE, read_meta
    from ..deploy.predictors import create_predictor
    from ..deploy.preprocess import build_preprocess, transform_ops
    model_dir, model_dir_source, inputs = _model_dir_and_inputs(
        a, lambda p: os.path.isfile(os.path.join(p, META_FILE)))
    cfg = None
    if a.config:
        cfg = load_config(a.config, a.override)
    elif a.override:
        raise DeployError("-o needs -c CONFIG")
    # without a config, Infer's settings are the schema's defaults
    infer = cfg["Infer"] if cfg else {k: key.default for k, key in SCHEMA["Infer"].items()}
    if model_dir is None and cfg:
        model_dir, model_dir_source = cfg["Global"]["save_inference_dir"], "Global.save_inference_dir"
    export_dir = model_dir
    needs_export = a.backend != "dygraph" and not (a.backend == "lite" and a.nb)
    if needs_export and not export_dir:
        raise DeployError(f"--backend {a.backend} needs an export folder: tools/infer.py MODEL_DIR INPUT..., "
                          "--model-dir or -c")
    if needs_export and not os.path.isdir(export_dir):
        raise DeployError(f"model folder {export_dir} ({model_dir_source}): not found; export a model with "
                          "tools/export.py, or name its folder: tools/infer.py MODEL_DIR INPUT...")
    meta = read_meta(export_dir) if a.backend != "dygraph" and export_dir and \
        not (a.backend == "lite" and a.nb and not os.path.isdir(export_dir)) else None
    if cfg is None and meta is None:
        raise DeployError(f"--backend {a.backend} without -c needs an export folder with "
                          f"export_meta.json (MODEL_DIR or --model-dir)")
    ops = transform_ops(cfg) if cfg else meta.get("preprocess")
    if not ops:
        raise DeployError(f"{export_dir}/export_meta.json records no preprocessing; pass -c CONFIG")
    sources = inputs or ([infer["infer_imgs"]] if infer["infer_imgs"] else [])
    if not sources:
        raise DeployError("no images: name them after the model folder (tools/infer.py MODEL_DIR INPUT...), "
                          "pass --input, or set Infer.infer_imgs")
    class_num = cfg["Arch"]["class_num"] if cfg else meta["model"]["class_num"]
    labels = None if a.ids else _labels_for(a, cfg, export_dir if meta else None, class_num)
    threads = a.threads or user_threads()
    backend, onnx_file = a.backend, a.onnx_file
    if a.int8:
        from ..deploy.int8 import INT8_FILE
        if backend not in ("auto", "onnx"):
            raise DeployError(f"--int8 runs on onnxruntime; it cannot go with --backend {backend}")
        backend, onnx_file = "onnx", onnx_file or os.path.join(export_dir, INT8_FILE)
        if not os.path.isfile(onnx_file):
            raise DeployError(f"{onnx_file}: not found (export with tools/export.py --int8)")
    images = _input_images(sources, DeployError)
    predictor = create_predictor(backend, export_dir=export_dir, cfg=cfg,
                                 checkpoint=a.checkpoint, threads=threads,
                                 lite_python=a.lite_python, nb=a.nb, onnx_file=onnx_file)
    shown = predictor.backend + (" (auto)" if a.backend == "auto" else "") + (" int8" if a.int8 else "")
    results, failed = _classify_readable(classify, predictor, images, build_preprocess(ops),
                                         batch_size=a.batch_size or infer["batch_size"],
                                         topk=min(a.topk or infer["topk"], class_num), labels=labels)
    if a.json:
        print(json.dumps({"backend": predictor.backend, "requested": a.backend, "int8": bool(a.int8),
                          "results": results, "failed": failed}, indent=2))
    else:
        print(format_table(results, shown))
    if failed:
        print(f"{len(failed)} of {len(images)} images could not be classified:", file=sys.stderr)
        for f in failed:
            print(f"  {f['error']}", file=sys.stderr)
        return 1
    return 0
