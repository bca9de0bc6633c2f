"""DataLoader.<mode>.dataset.transforms_on_batch: the transforms' pixel work done once per batch
with Paddle ops in the training process, instead of once per image in the loader workers.

Why: on a small CPU the workers' per-image work (PIL crop + resize, paddle.vision's Normalize,
the float32 copy sent through shared memory) competes for the cores the training step runs on:
the demo's step is 0.09 s alone and 0.13 s with its workers running. Here a worker only draws
each image's random parameters, with the transform's own code under the same sample_rng (so the
crop and the flip of sample i in epoch e are the ones the per-image path draws), and sends six
integers; the training process resamples the whole batch from the decoded-image cache with two
batched matmuls.

The resampling is PIL's bilinear filter written as a matrix (the coefficients of PIL's
precompute_coeffs: a triangle of half-width max(1, scale), normalised per output pixel), in
float32: PIL rounds to 8 bits after each pass, so the pixels differ from the per-image path's by
at most about one level of 255 (tests/test_data.py checks it).

Supported pipelines, in this order: RandomResizedCrop (bilinear) and RandomHorizontalFlip, each
optional, then Normalize (data_format HWC, to_rgb false) and Transpose([2, 0, 1]). Every cached
image must have the same size and 3 channels.
"""
import random

import numpy as np
import paddle

from .errors import DataError


def check_batch_pipeline(ops):
    """DataError naming the op unless `ops` ([(name, op)]) is a pipeline this module runs."""
    names = [name for name, _ in ops]
    if names not in [head + ["Normalize", "Transpose"] for head in
                     ([], ["RandomResizedCrop"], ["RandomHorizontalFlip"],
                      ["RandomResizedCrop", "RandomHorizontalFlip"])]:
        raise DataError(f"it runs the transforms [RandomResizedCrop], [RandomHorizontalFlip], Normalize, "
                        f"Transpose, in that order; the transforms are {names}")
    ops = dict(ops)
    crop, norm, transpose = ops.get("RandomResizedCrop"), ops["Normalize"], ops["Transpose"]
    if crop is not None and crop.interpolation != "bilinear":
        raise DataError(f"RandomResizedCrop interpolation must be bilinear, "
                        f"got {crop.interpolation!r}")
    if norm.data_format != "HWC" or norm.to_rgb:
        raise DataError("Normalize needs data_format HWC and to_rgb false")
    if list(transpose.order) != [2, 0, 1]:
        raise DataError(f"Transpose order must be [2, 0, 1], got {list(transpose.order)}")


def draw_params(ops, idx, img):
    """Sample idx's batch item, drawn by the ops' own code in the ops' order (call it under
    sample_rng): int64 [sample index, crop top, crop left, crop height, crop width, mirrored]."""
    ops = dict(ops)
    width, height = img.size
    top, left, h, w = 0, 0, height, width
    if "RandomResizedCrop" in ops:
        top, left, h, w = ops["RandomResizedCrop"]._dynamic_get_param(img)
    flip = "RandomHorizontalFlip" in ops and random.random() < ops["RandomHorizontalFlip"].prob
    return np.array([idx, top, left, h, w, flip], dtype=np.int64)


def crop_weights(length, out_size):
    """[out_size, length] float32: row o holds PIL's bilinear coefficients of output pixel o over
    a crop of `length` input pixels (the identity when length == out_size)."""
    scale = length / out_size
    support = max(scale, 1.0)                 # PIL widens the filter when it shrinks
    centre = (np.arange(out_size)[:, None] + 0.5) * scale
    w = np.clip(1.0 - np.abs(np.arange(length)[None, :] + 0.5 - centre) / support, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


class BatchTransforms:
    """callable(int64 [N, 6] batch items of draw_params) -> float32 [N, 3, S, S] paddle Tensor, from `pixels`
    (uint8 [images, 3, H, W], the decoded-image cache) and the pipeline's ops."""

    def __init__(self, ops, pixels):
        check_batch_pipeline(ops)
        self.pixels = pixels
        named = dict(ops)
        crop = named.get("RandomResizedCrop")
        self.out_hw = tuple(crop.size) if crop is not None else pixels.shape[2:]
        self._weights = {}                    # (crop length, output size) -> crop_weights
        norm = named["Normalize"]
        # in numpy: Paddle's broadcast subtract and divide on a CPU batch cost ~8 ms each
        # (Paddle 3.3.1), numpy's over contiguous planes ~0.5 ms
        self.mean, self.std = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in (norm.mean, norm.std))

    def _resampling(self, starts, lengths, in_size, out_size):
        """[N, out_size, in_size]: each image's crop_weights, placed at its crop's start."""
        m = np.zeros((len(starts), out_size, in_size), np.float32)
        for k, (start, length) in enumerate(zip(starts, lengths)):
            key = (int(length), out_size)
            if key not in self._weights:
                self._weights[key] = crop_weights(*key)
            m[k, :, start:start + length] = self._weights[key]
        return m

    def __call__(self, items):
        items = np.asarray(items, dtype=np.int64)
        idx, top, left, h, w, flip = items.T
        height, width = self.pixels.shape[2:]
        rows = self._resampling(top, h, height, self.out_hw[0])             # [N, S_h, H]
        cols = self._resampling(left, w, width, self.out_hw[1])             # [N, S_w, W]
        cols[flip.astype(bool)] = cols[flip.astype(bool), ::-1]   # the mirror of the resized crop
        cols_t = np.ascontiguousarray(cols.transpose(0, 2, 1))              # [N, W, S_w]
        x = self.pixels[idx].astype(np.float32)                               # [N, 3, H, W]
        x -= self.mean
        x /= self.std       # normalised, then resampled: the same numbers (each row of weights sums to 1)
        return paddle.matmul(paddle.matmul(paddle.to_tensor(rows[:, None]), paddle.to_tensor(x)),
                             paddle.to_tensor(cols_t[:, None]))
