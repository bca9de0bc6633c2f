#!/usr/bin/env python3
"""Classify images with a Paddle Lite .nb model on an ARM Linux board (or an x86 .nb on a PC).

One file, needing only paddlelite, numpy and Pillow (no paddle, no ppmobilenet): copy it to the
board beside the model, export_meta.json and labels.txt from tools/export.py, then

    python3 lite_predict.py --model mobilenet_v1_arm.nb img1.jpg photos/ list.txt
    python3 lite_predict.py --model mobilenet_v1_arm.nb --meta export_meta.json --topk 3 --json a.png

The preprocessing in export_meta.json (the config's eval transforms) is reimplemented below with
Pillow + numpy, following paddle.vision.transforms' PIL code path step by step (Resize,
CenterCrop, ToTensor, Normalize, Transpose); ppmobilenet's tests hold the two to 1e-6.
The .nb must come from the opt of the same Paddle Lite version as the runtime here.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_EXTS = (".txt", ".lst", ".list")


class LitePredictError(Exception):
    pass


# ---------- the .nb file: checked before Lite sees it (Lite aborts the process on a bad one) ----

def check_nb(path):
    """-> opt version string; LitePredictError naming the file if it is missing, not a Lite
    model, or truncated. Layout (opt 2.13): uint16 meta version, char[16] opt version, uint64
    topology size, topology, then a 12-byte parameter header (uint16 count at offset 6) and per
    parameter a uint32 size and its bytes."""
    if not os.path.isfile(path):
        raise LitePredictError(f"Lite model {path}: not found")
    with open(path, "rb") as f:
        data = f.read()
    size = len(data)
    if size < 26:
        raise LitePredictError(f"Lite model {path}: {size} bytes, too small to be a Paddle Lite .nb model")
    meta_version, = struct.unpack_from("<H", data, 0)
    version = data[2:18].split(b"\0", 1)[0].decode("ascii", "replace")
    if meta_version > 16 or not version.startswith("v") or not version.isprintable():
        raise LitePredictError(f"Lite model {path}: not a Paddle Lite naive-buffer model "
                               f"(no opt version in its header)")
    topo, = struct.unpack_from("<Q", data, 18)
    off = 26 + topo
    if off > size:
        raise LitePredictError(f"Lite model {path}: truncated - its topology needs {off} bytes, "
                               f"the file has {size}")
    if meta_version != 2:
        return version
    if off + 12 > size:
        raise LitePredictError(f"Lite model {path}: truncated - the parameter section is missing")
    count, = struct.unpack_from("<H", data, off + 6)
    off += 12
    for i in range(count):
        if off + 4 > size:
            raise LitePredictError(f"Lite model {path}: truncated - parameter {i + 1} of {count} is missing")
        off += 4 + struct.unpack_from("<I", data, off)[0]
        if off > size:
            raise LitePredictError(f"Lite model {path}: truncated - parameter {i + 1} of {count} "
                                   f"needs bytes up to {off}, the file has {size}")
    if off != size:
        raise LitePredictError(f"Lite model {path}: {size - off} unexpected bytes after its parameters")
    return version


# ---------- preprocessing: paddle.vision.transforms' PIL path, in Pillow + numpy ----------

def _interp(name):
    from PIL import Image
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
    """RGB PIL image as ppmobilenet.data.load_image makes it: EXIF rotation applied; grayscale,
    16-bit, palette, alpha and CMYK images converted."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    if not os.path.isfile(path):
        raise LitePredictError(f"image {path}: not found")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # convert("RGB") would clip
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I") and arr.max() > 255 else 255.0
                im = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            return im if im.mode == "RGB" else im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise LitePredictError(f"image {path}: not a readable image ({e})") from None


def list_images(inputs):
    found = []
    for path in inputs:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTS))
            if not names:
                raise LitePredictError(f"input folder {path}: no images in it")
            found += [os.path.join(path, n) for n in names]
        elif path.lower().endswith(LIST_EXTS):
            base = os.path.dirname(os.path.abspath(path))
            if not os.path.isfile(path):
                raise LitePredictError(f"list file {path}: not found")
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip() and not line.startswith("#"):
                        item = line.split()[0]
                        full = item if os.path.isabs(item) else os.path.join(base, item)
                        if not os.path.isfile(full):
                            raise LitePredictError(f"list file {path}, line {lineno}: image {full} not found")
                        found.append(full)
        else:
            found.append(path)
    return found


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
            try:
                with open(path, encoding="utf-8") as f:
                    return path, json.load(f)
            except ValueError as e:
                raise LitePredictError(f"{path}: not valid JSON ({e})") from None
    raise LitePredictError(f"export_meta.json not found (looked at {', '.join(candidates)}); "
                           f"copy it from the export folder or pass --meta")


def read_labels(path, class_num):
    names = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(None, 1)
            try:
                names[int(parts[0])] = parts[1] if len(parts) > 1 else parts[0]
            except ValueError:
                raise LitePredictError(f"label file {path}, line {lineno}: expected `id name`") from None
    if sorted(names) != list(range(len(names))) or (class_num and len(names) != class_num):
        raise LitePredictError(f"label file {path}: {len(names)} labels (ids must run 0..n-1) but "
                               f"the model has {class_num} classes")
    return [names[i] for i in range(len(names))]


def create_predictor(model, threads):
    from paddlelite.lite import MobileConfig, create_paddle_predictor, Opt
    version = check_nb(model)
    runtime = Opt().version() if hasattr(Opt, "version") else None
    if runtime and runtime != version:
        raise LitePredictError(f"Lite model {model} was written by opt {version}; this runtime is "
                               f"Paddle Lite {runtime}. Convert with the opt of the runtime's version.")
    config = MobileConfig()
    config.set_model_from_file(model)
    if hasattr(config, "set_threads"):  # ARM builds have it; the x86 wheel does not
        config.set_threads(threads)
    return create_paddle_predictor(config)


def predict(predictor, batch):
    predictor.get_input(0).from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    predictor.run()
    return predictor.get_output(0).numpy().copy()


def main(argv=None):
    p = argparse.ArgumentParser(description="Classify images with a Paddle Lite .nb model.")
    p.add_argument("inputs", nargs="+", help="image files, folders, or list files (one path a line)")
    p.add_argument("--model", required=True, help="the .nb written by paddle_lite_opt")
    p.add_argument("--meta", help="export_meta.json (default: beside the model or one folder up)")
    p.add_argument("--labels", help="`id name` label file (default: the one export_meta.json names)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
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
        labels = read_labels(labels_path, class_num) if labels_path and os.path.isfile(labels_path) else None
        if args.labels and labels is None:
            raise LitePredictError(f"label file {args.labels}: not found")
        images = list_images(args.inputs)
        predictor = create_predictor(args.model, args.threads)
        results = []
        for i in range(0, len(images), args.batch_size):
            chunk = images[i:i + args.batch_size]
            out = predict(predictor, np.stack([preprocess(load_image(x), ops) for x in chunk]))
            for path, row in zip(chunk, out):
                top = np.argsort(-row, kind="stable")[:args.topk]
                results.append({"image": path, "topk": [
                    {"class_id": int(c), "label": labels[c] if labels else None,
                     "score": float(row[c])} for c in top]})
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
