"""export_meta.json: what a predictor needs to know without the config (model, input shape,
preprocessing, labels, converted files, the sha256 of every file), and the checks that an export
folder is complete and unchanged: read_meta verifies every recorded checksum, so whatever reads
an export through it (tools/infer.py, the predictors, conversions) refuses a damaged file by name."""
import os

from .. import board
from ..io import atomic_write_json, folder_files, interrupted_swap, read_json, sha256_file
from .errors import DeployError

META_FILE = "export_meta.json"
LABEL_FILE = "labels.txt"
PIR_FILES = ("inference.json", "inference.pdiparams")
LEGACY_FILES = ("lite/inference.pdmodel", "lite/inference.pdiparams")
FORMAT_VERSION = 2          # 2: "files", the sha256 of every file of the export


def make_meta(arch, image_shape, softmax, ops, labels, paddle_version, macs=None):
    return {
        "format_version": FORMAT_VERSION,
        "model": {"name": arch["name"], "scale": arch["scale"],
                  "head": arch["head"] if arch["name"] == "mobilenet_v1" else None,
                  "class_num": arch["class_num"]},
        "image_shape": list(image_shape),
        "macs_per_image": macs,      # picks the thread count of tools/infer.py (predictors.py)
        "input_name": "x",
        "softmax": bool(softmax),
        "preprocess": ops,
        "labels": LABEL_FILE if labels else None,
        "class_names": list(labels) if labels else None,
        "paddle_version": paddle_version,
        "lite": {},
        "onnx": None,
        "int8": None,
    }


def write_meta(export_dir, meta):
    """Write export_meta.json with the sha256 of every file now in `export_dir` (each step that
    adds a file rewrites it, so the record always covers the folder as it is)."""
    meta = dict(meta, format_version=FORMAT_VERSION)
    meta["files"] = {rel: sha256_file(os.path.join(export_dir, rel))
                     for rel in folder_files(export_dir) if rel != META_FILE}
    atomic_write_json(os.path.join(export_dir, META_FILE), meta)


def read_meta(export_dir, verify=True):
    """export_meta.json -> its dict; DeployError naming the folder or file at fault. verify:
    check the sha256 of every file it records first (board.verify_export). What writes the
    export (export.py, the conversions, which re-record the folder) reads it with verify=False."""
    path = os.path.join(export_dir, META_FILE)
    if not os.path.isdir(export_dir):
        left = interrupted_swap(export_dir)
        raise DeployError(f"export folder {export_dir}: not found" + (
            f" (an export killed while swapping folders left the complete one at {left}: the "
            "next export puts it in place, or rename it yourself)" if left else ""))
    if not os.path.isfile(path):
        raise DeployError(f"export folder {export_dir}: {META_FILE} is missing (run tools/export.py)")
    meta = read_json(path, META_FILE, DeployError)
    if not isinstance(meta, dict):
        raise DeployError(f"{path}: not an export description (a JSON object)")
    for key in ("model", "image_shape", "preprocess"):
        if key not in meta:
            raise DeployError(f"{path}: key {key!r} is missing")
    if verify:
        board.verify_export(export_dir, meta, error=DeployError)
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
