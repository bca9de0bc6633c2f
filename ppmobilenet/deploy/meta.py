"""export_meta.json: what a predictor needs to know without the config (model, input shape,
preprocessing, labels, converted files), and the checks that an export folder is complete."""
import json
import os

from .errors import DeployError
from .fileio import write_json

META_FILE = "export_meta.json"
LABEL_FILE = "labels.txt"
PIR_FILES = ("inference.json", "inference.pdiparams")
LEGACY_FILES = ("lite/inference.pdmodel", "lite/inference.pdiparams")
FORMAT_VERSION = 1


def make_meta(arch, image_shape, softmax, ops, labels, paddle_version, macs=None):
    return {
        "format_version": FORMAT_VERSION,
        "model": {"name": arch["name"], "scale": arch.get("scale", 1.0),
                  "head": arch.get("head") if arch["name"] == "mobilenet_v1" else None,
                  "class_num": arch["class_num"]},
        "image_shape": list(image_shape),
        "macs_per_image": macs,      # picks the thread count of tools/infer.py (predictors.py)
        "input_name": "x",
        "softmax": bool(softmax),
        "preprocess": ops,
        "labels": LABEL_FILE if labels else None,
        "paddle_version": paddle_version,
        "lite": {},
        "onnx": None,
        "int8": None,
    }


def write_meta(export_dir, meta):
    write_json(os.path.join(export_dir, META_FILE), meta)


def read_meta(export_dir):
    path = os.path.join(export_dir, META_FILE)
    if not os.path.isfile(path):
        raise DeployError(f"export folder {export_dir}: {META_FILE} is missing (run tools/export.py)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except ValueError as e:
        raise DeployError(f"{path}: not valid JSON ({e})") from None
    for key in ("model", "image_shape", "preprocess"):
        if key not in meta:
            raise DeployError(f"{path}: key {key!r} is missing")
    return meta


def require_files(export_dir, names):
    """Raise naming the first missing file of an export folder."""
    if not os.path.isdir(export_dir):
        raise DeployError(f"export folder {export_dir}: not found")
    for name in names:
        path = os.path.join(export_dir, name)
        if not os.path.isfile(path):
            raise DeployError(f"export folder {export_dir}: {name} is missing ({path})")
        if os.path.getsize(path) == 0:
            raise DeployError(f"export folder {export_dir}: {name} is empty ({path})")
