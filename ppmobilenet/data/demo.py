"""The bundled demo data: scikit-learn's 1797 handwritten digits as real PNG files.

`prepare_demo_digits()` writes them once into `<cache_dir>/demo_digits/` (64x64 RGB, upsampled
from 8x8 with bilinear filtering, 0..16 scaled to 0..255), with the fluid/PaddleClas list files
`train_list.txt`, `val_list.txt` (stratified 80/20, fixed seed) and `labels.txt` (`0 zero`).
Files sit as `train/<digit>/<index>.png` and `val/<digit>/<index>.png`, so the same folders also
work with the ImageFolder dataset. The folder is built under a temporary name and renamed into
place, so a half-written folder from a killed run is never used; later calls reuse it.
"""
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from ..io import cache_root, replace_atomic, write_labels
from .errors import DataError

logger = logging.getLogger(__name__)

DEMO_VERSION = 1
SPLIT_SEED = 0
VAL_FRACTION = 0.2
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def stratified_split(labels, val_fraction=VAL_FRACTION, seed=SPLIT_SEED):
    """Per class, a fixed-seed shuffle; the first round(fraction * n) go to val. -> (train, val)
    sorted index arrays. Uses numpy's legacy RandomState, whose stream never changes."""
    rng = np.random.RandomState(seed)
    train, val = [], []
    for c in sorted(set(int(x) for x in labels)):
        idx = rng.permutation(np.flatnonzero(np.asarray(labels) == c))
        k = int(round(val_fraction * len(idx)))
        val.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _paths(root):
    return {"root": root, "train_list": os.path.join(root, "train_list.txt"),
            "val_list": os.path.join(root, "val_list.txt"), "label_file": os.path.join(root, "labels.txt")}


def _meta_ok(root, image_size):
    try:
        with open(os.path.join(root, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return meta.get("version") == DEMO_VERSION and meta.get("image_size") == image_size


def _write_set(tmp, image_size):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the DemoDigits data set needs scikit-learn the first time: "
                        "pip install 'ppmobilenet[demo]' (or scikit-learn)") from None
    from PIL import Image

    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train, val = stratified_split(labels)
    for split, indices in (("train", train), ("val", val)):
        lines = []
        for i in indices:
            label = int(labels[i])
            rel = f"{split}/{label}/{i:04d}.png"
            os.makedirs(os.path.join(tmp, split, str(label)), exist_ok=True)
            img = Image.fromarray(images[i], mode="L").resize((image_size, image_size), Image.BILINEAR)
            img.convert("RGB").save(os.path.join(tmp, rel), format="PNG")
            lines.append(f"{rel} {label}\n")
        with open(os.path.join(tmp, f"{split}_list.txt"), "w", encoding="utf-8") as f:
            f.writelines(lines)
    write_labels(os.path.join(tmp, "labels.txt"), DIGIT_NAMES)
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:   # written last
        json.dump({"version": DEMO_VERSION, "image_size": image_size, "num_train": len(train),
                   "num_val": len(val), "split_seed": SPLIT_SEED, "source": "sklearn.datasets.load_digits"},
                  f, indent=1)
    return len(train), len(val)


def _remove_stale_temps(cache_dir, max_age_s=3600):
    """Temp folders of killed runs: removed once old and their process is gone."""
    for name in os.listdir(cache_dir):
        if not name.startswith(".demo_digits-tmp-"):
            continue
        path = os.path.join(cache_dir, name)
        try:
            pid = int(name.split("-")[3])
            os.kill(pid, 0)
            continue                                  # still running (on this host)
        except (ValueError, IndexError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        try:
            if time.time() - os.path.getmtime(path) > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def prepare_demo_digits(cache_dir=None, image_size=64):
    """Write the digits once (atomically) and return {root, train_list, val_list, label_file}."""
    cache_dir = cache_dir or cache_root()
    image_size = int(image_size)
    root = os.path.join(cache_dir, "demo_digits" if image_size == 64 else f"demo_digits_{image_size}")
    if _meta_ok(root, image_size):
        return _paths(root)
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the demo cache folder {cache_dir}: {e}") from None
    _remove_stale_temps(cache_dir)
    if os.path.exists(root):
        # not ours or an older layout (it was never half-written: we rename complete folders)
        logger.warning("replacing %s: it lacks a matching meta.json", root)
        trash = tempfile.mkdtemp(prefix=f".demo_digits-tmp-{os.getpid()}-old-", dir=cache_dir)
        replace_atomic(root, os.path.join(trash, "old"))
        shutil.rmtree(trash, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".demo_digits-tmp-{os.getpid()}-", dir=cache_dir)
    try:
        n_train, n_val = _write_set(tmp, image_size)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _meta_ok(root, image_size):        # not a concurrent writer winning the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            logger.info("wrote the demo digits to %s (%d train, %d val PNGs)", root, n_train, n_val)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _paths(root)
