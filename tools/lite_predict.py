#!/usr/bin/env python3
"""Classify images with a Paddle Lite .nb model on an ARM Linux board (or an x86 .nb on a PC).

Needs paddlelite, numpy and Pillow, and of ppmobilenet only three small files - no paddle. Copy
to the board, side by side:

    lite_predict.py                      this file (tools/lite_predict.py)
    ppmobilenet/__init__.py              (empty of imports)
    ppmobilenet/io.py                    label files, image lists (standard library only)
    ppmobilenet/board.py                 image reading, the .nb check, the Lite predictor
    mobilenet_v1_arm.nb                  from the export folder's lite/ (tools/export.py --lite arm)
    export_meta.json, labels.txt         from the export folder

then
    python3 lite_predict.py --model mobilenet_v1_arm.nb img1.jpg photos/ list.txt
    python3 lite_predict.py --model mobilenet_v1_arm.nb --meta export_meta.json --topk 3 --json a.png

The preprocessing in export_meta.json (the config's eval transforms) is reimplemented below with
Pillow + numpy, following paddle.vision.transforms' PIL code path step by step (Resize,
CenterCrop, ToTensor, Normalize, Transpose); ppmobilenet's tests hold the two to 1e-6.
The .nb must come from the opt of the same Paddle Lite version as the runtime here, and its
sha256 must be one export_meta.json records (a damaged or partial copy is refused by name).
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.path.isfile(os.path.join(HERE, "ppmobilenet", "board.py")):
    sys.path.append(os.path.dirname(HERE))       # in the repository: tools/../ppmobilenet
from ppmobilenet import board  # noqa: E402
from ppmobilenet.io import list_images, read_json, read_labels  # noqa: E402


class LitePredictError(Exception):
    pass


def check_nb(path):
    """-> opt version string; LitePredictError naming the file if it is missing, not a Lite
    model, or truncated (Lite itself would abort the process)."""
    return board.inspect_nb(path, error=LitePredictError)["opt_version"]


# ---------- preprocessing: paddle.vision.transforms' PIL path, in Pillow + numpy ----------

def _interp(name):
    table = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "box": Image.BOX, "lanczos": Image.LANCZOS, "hamming": Image.HAMMING}
    if name not in table:
        raise LitePredictError(f"Resize interpolation {name!r}: choose from {sorted(table)}")
    return table[name]


def op_resize(img, size, interpolation="bilinear", **_):
    if isinstance(img, np.ndarray):
        raise LitePredictError("Resize after ToTensor/Normalize is not supported")
    if isinstance(size, int):  # the short side becomes `size`, the long one int(size * ratio)
        w, h = img.size
        if (w <= h and w == size) or (h <= w and h == size):
            return img
        ow, oh = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
        return img.resize((ow, oh), _interp(interpolation))
    return img.resize((size[1], size[0]), _interp(interpolation))


def op_center_crop(img, size, **_):
    if isinstance(img, np.ndarray):
        raise LitePredictError("CenterCrop after ToTensor/Normalize is not supported")
    ch, cw = (size, size) if isinstance(size, (int, float)) else size
    ch, cw = int(ch), int(cw)
    w, h = img.size
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def _to_array(img):
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def op_to_tensor(img, data_format="CHW", **_):
    arr = _to_array(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / np.float32(255.0)
    return arr.transpose(2, 0, 1) if data_format == "CHW" else arr


def op_normalize(img, mean=0.0, std=1.0, data_format="CHW", to_rgb=False, **_):
    mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
    std = [std] * 3 if isinstance(std, (int, float)) else std
    shape = (-1, 1, 1) if data_format == "CHW" else (1, 1, -1)
    mean = np.float32(np.array(mean).reshape(shape))
    std = np.float32(np.array(std).reshape(shape))
    if not isinstance(img, np.ndarray):  # on a PIL image: HWC float32, as paddle does
        img = np.array(img).astype(np.float32)
        if to_rgb:
            img = img[..., ::-1]
    return (img - mean) / std


def op_transpose(img, order=(2, 0, 1), **_):
    return _to_array(img).transpose(order)


OPS = {"Resize": op_resize, "CenterCrop": op_center_crop, "ToTensor": op_to_tensor,
       "Normalize": op_normalize, "Transpose": op_transpose}


def preprocess(img, ops):
    for op in ops:
        (name, kwargs), = op.items()
        if name not in OPS:
            raise LitePredictError(f"export_meta.json preprocess op {name!r} is not supported "
                                   f"here; supported: {', '.join(OPS)}")
        img = OPS[name](img, **(kwargs or {}))
    if not isinstance(img, np.ndarray) or img.dtype == np.uint8:  # no ToTensor: scale as it would
        img = op_to_tensor(img)
    return np.ascontiguousarray(img, dtype=np.float32)


def load_image(path):
    """RGB PIL image as ppmobilenet.data.load_image makes it (the same code: ppmobilenet.board)."""
    return board.load_image(path, LitePredictError)


# ---------- meta, labels, predictor ----------

def find_meta(model, meta):
    if meta:
        candidates = [meta]
    else:  # beside the model on the board, or the export folder above lite/
        here = os.path.dirname(os.path.abspath(model))
        candidates = [os.path.join(here, "export_meta.json"),
                      os.path.join(os.path.dirname(here), "export_meta.json")]
    for path in candidates:
        if os.path.isfile(path):
            return path, read_json(path, "export_meta.json", LitePredictError)
    raise LitePredictError(f"export_meta.json not found (looked at {', '.join(candidates)}); "
                           f"copy it from the export folder or pass --meta")


def create_predictor(model, threads, meta, meta_path):
    """The .nb checked (layout, opt version, sha256 against export_meta.json), then loaded."""
    version = check_nb(model)
    mismatch = board.version_mismatch(model, version, board.lite_version())
    if mismatch:
        raise LitePredictError(mismatch)
    board.verify_model_file(model, meta, meta_path, error=LitePredictError)
    return board.lite_predictor(model, threads)


def main(argv=None):
    p = argparse.ArgumentParser(description="Classify images with a Paddle Lite .nb model.")
    p.add_argument("inputs", nargs="+", help="image files, folders, or list files (one path a line)")
    p.add_argument("--model", required=True, help="the .nb written by paddle_lite_opt")
    p.add_argument("--meta", help="export_meta.json (default: beside the model or one folder up)")
    p.add_argument("--labels", help="`id name` label file (default: the one export_meta.json names)")
    p.add_argument("--topk", type=board.positive_int, default=5)
    p.add_argument("--batch-size", type=board.positive_int, default=1)
    p.add_argument("--threads", type=board.positive_int, default=1,
                   help="Lite's CPU threads (ARM builds; the x86 wheel cannot set them)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    try:
        meta_path, meta = find_meta(args.model, args.meta)
        ops = meta.get("preprocess")
        if not ops:
            raise LitePredictError(f"{meta_path}: no preprocess ops recorded")
        class_num = (meta.get("model") or {}).get("class_num")
        labels_path = args.labels or (meta.get("labels") and
                                      os.path.join(os.path.dirname(meta_path), meta["labels"]))
        labels = read_labels(labels_path, class_num, error=LitePredictError) \
            if labels_path and os.path.isfile(labels_path) else None
        if args.labels and labels is None:
            raise LitePredictError(f"label file {args.labels}: not found")
        images = list_images(args.inputs, error=LitePredictError)
        predictor = create_predictor(args.model, args.threads, meta, meta_path)
        if args.threads != 1 and not board.lite_sets_threads():
            print(f"lite_predict: note: this Paddle Lite build cannot set its thread count (no "
                  f"MobileConfig.set_threads, as in the x86 wheel): --threads {args.threads} has "
                  "no effect here", file=sys.stderr)
        results = []
        for i in range(0, len(images), args.batch_size):
            chunk = images[i:i + args.batch_size]
            batch = np.stack([preprocess(load_image(x), ops) for x in chunk])
            out = board.lite_run(predictor, batch)
            results += [{"image": path, "topk": top}
                        for path, top in zip(chunk, board.topk_rows(out, args.topk, labels))]
    except LitePredictError as e:
        print(f"lite_predict: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": args.model, "results": results}, indent=2))
    else:
        for r in results:
            best = r["topk"][0]
            rest = "  ".join(f"{t['class_id']}:{t['score']:.4f}" for t in r["topk"][1:])
            name = f" {best['label']}" if best["label"] is not None else ""
            print(f"{r['image']}  ->  {best['class_id']}{name}  {best['score']:.4f}   {rest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
