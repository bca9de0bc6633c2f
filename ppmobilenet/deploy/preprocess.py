"""Images in, batches out: the config's eval preprocessing shared by every backend.

Uses ppmobilenet.data (build_transforms, load_image) so training, eval and deployment see the
same pixels, and ppmobilenet.io for the input listing (a file, a folder or a list file).
"""
import numpy as np

from ..io import list_images as list_input_images
from ..data import build_transforms, load_image
from .errors import DeployError


def transform_ops(cfg):
    """Infer.transforms, else DataLoader.Eval.transforms: a list of {ClassName: {kwargs}}."""
    ops = cfg["Infer"]["transforms"] or cfg["DataLoader"]["Eval"]["transforms"]
    if not ops:
        raise DeployError("config: neither Infer.transforms nor DataLoader.Eval.transforms is set; "
                          "inference needs the eval preprocessing")
    return ops


def build_preprocess(ops):
    """-> callable(PIL image) -> float32 numpy CHW (ppmobilenet.data's pipeline, as in eval)."""
    return build_transforms(ops)


def list_images(path):
    """ppmobilenet.io.list_images, its errors a DeployError."""
    return list_input_images(path, error=DeployError)


def batches(paths, preprocess, batch_size):
    """Yield (paths, float32 array [N, C, H, W])."""
    for i in range(0, len(paths), batch_size):
        chunk = paths[i:i + batch_size]
        yield chunk, np.stack([preprocess(load_image(p)) for p in chunk])
