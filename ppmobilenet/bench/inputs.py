"""Real input batches for the benchmark: the demo digits (real PNGs on disk), preprocessed as
the eval transforms do (resize to the model's size, ToTensor, ImageNet Normalize)."""
import os

import numpy as np

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def eval_ops(size):
    """Plain resize + ImageNet normalization: the registry models' preprocessing at `size`."""
    return [{"Resize": {"size": [size, size]}}, {"ToTensor": {}},
            {"Normalize": {"mean": MEAN, "std": STD}}]


def demo_eval_ops():
    """configs/demo.yaml's own eval preprocessing (what its training run evaluated with)."""
    from ppmobilenet.config import load_config
    from ppmobilenet.deploy.preprocess import transform_ops
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return transform_ops(load_config(os.path.join(root, "configs", "demo.yaml")))


def read_list(list_file):
    """-> [(absolute image path, label)] of a `relative/path label` list file."""
    base, out = os.path.dirname(os.path.abspath(list_file)), []
    with open(list_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{list_file}, line {lineno}: expected `path label`, got {line!r}")
            out.append((os.path.join(base, parts[0]), int(parts[1])))
    return out


def load_split(split, size, limit=None, cache_dir=None, ops=None):
    """-> (images [N, 3, size, size] float32, labels [N] int64) of the demo digits' train or val
    split (evenly spaced samples when limit is given, so every class appears), preprocessed by
    `ops` [eval_ops(size)]."""
    from ppmobilenet.data import build_transforms, load_image
    from ppmobilenet.data.demo import prepare_demo_digits
    paths = prepare_demo_digits(cache_dir=cache_dir)
    items = read_list(paths[f"{split}_list"])
    if limit and limit < len(items):
        idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
        items = [items[i] for i in idx]
    pre = build_transforms(ops or eval_ops(size))
    images = np.stack([np.asarray(pre(load_image(p)), dtype="float32") for p, _ in items])
    return images, np.array([l for _, l in items], dtype="int64")


def write_inputs(path, size, count=8, cache_dir=None, ops=None):
    """The batch every inference engine runs (and is compared on): `count` val images."""
    x, y = load_split("val", size, limit=count, cache_dir=cache_dir, ops=ops)
    tmp = path + ".tmp.npz"
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)
    return path
