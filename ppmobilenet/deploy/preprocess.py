"""Images in, batches out: the config's eval preprocessing shared by every backend.

Uses ppmobilenet.data (build_transforms, load_image) so training, eval and deployment see the
same pixels.
"""
import os

import numpy as np

from .errors import DeployError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_EXTS = (".txt", ".lst", ".list")


def transform_ops(cfg):
    """Infer.transforms, else DataLoader.Eval.transforms: a list of {ClassName: {kwargs}}."""
    ops = (cfg.get("Infer") or {}).get("transforms")
    if not ops:
        ops = (((cfg.get("DataLoader") or {}).get("Eval") or {}).get("transforms"))
    if not ops:
        raise DeployError("config: neither Infer.transforms nor DataLoader.Eval.transforms is set; "
                          "inference needs the eval preprocessing")
    return ops


def build_preprocess(ops):
    """-> callable(PIL image) -> float32 numpy CHW (ppmobilenet.data's pipeline, as in eval)."""
    from ppmobilenet.data import build_transforms
    return build_transforms(ops)


def load_image(path):
    """-> RGB PIL image (grayscale, RGBA, palette converted); DataError naming the file."""
    from ppmobilenet.data import load_image as data_load_image
    return data_load_image(path)


def list_images(path):
    """An image file, a folder (its images, sorted, not recursive) or a list file
    (one image a line, `path [label]`, relative paths against the list file's folder)."""
    if not os.path.exists(path):
        raise DeployError(f"input {path}: not found")
    if os.path.isdir(path):
        found = sorted(os.path.join(path, n) for n in os.listdir(path)
                       if n.lower().endswith(IMAGE_EXTS))
        if not found:
            raise DeployError(f"input folder {path}: no images in it ({', '.join(IMAGE_EXTS)})")
        return found
    if path.lower().endswith(LIST_EXTS):
        base, found = os.path.dirname(os.path.abspath(path)), []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                item = line.split()[0]
                full = item if os.path.isabs(item) else os.path.join(base, item)
                if not os.path.isfile(full):
                    raise DeployError(f"list file {path}, line {lineno}: image {full} not found")
                found.append(full)
        if not found:
            raise DeployError(f"list file {path}: no images listed")
        return found
    return [path]


def batches(paths, preprocess, batch_size):
    """Yield (paths, float32 array [N, C, H, W])."""
    for i in range(0, len(paths), batch_size):
        chunk = paths[i:i + batch_size]
        yield chunk, np.stack([preprocess(load_image(p)) for p in chunk])
