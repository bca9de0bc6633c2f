"""Transforms from the config: a list of `{ClassName: {kwargs}}` over paddle.vision.transforms.

Feed PIL images (paddle's transforms import cv2 for numpy input, and cv2 is not installed).
`sample_rng(seed, epoch, index)` makes one sample's augmentation a pure function of those three
numbers: paddle's random transforms draw from python `random` and `numpy.random`, so both are
seeded from them around each call (and restored afterwards, except in a DataLoader worker
process, which owns its generators).
"""
import contextlib
import difflib
import inspect
import os
import random
import threading

import numpy as np
from paddle.io import get_worker_info

from ..errors import short_repr
from .errors import DataError


class TransformSpecError(ValueError):
    """A bad transform entry; `.op` is the op name when known (for `transforms[0].Op` paths)."""

    def __init__(self, msg, op=None):
        super().__init__(msg)
        self.op = op


def available_transforms():
    """name -> class for every transform class paddle.vision.transforms exports."""
    import paddle.vision.transforms as T
    return {name: getattr(T, name) for name in T.__all__
            if inspect.isclass(getattr(T, name)) and issubclass(getattr(T, name), T.BaseTransform)
            and name != "BaseTransform"}


def check_transform(item):
    """Validate one `{Name: kwargs}` entry and return (name, kwargs); TransformSpecError if bad."""
    if not isinstance(item, dict) or len(item) != 1:
        raise TransformSpecError(f"each transform must be a single-key mapping like "
                                 f"{{Resize: {{size: 256}}}}, got {short_repr(item)}")
    (name, kwargs), = item.items()
    ops = available_transforms()
    if name == "Compose":
        raise TransformSpecError("Compose is implied: list the transforms themselves")
    if name not in ops:
        guess = difflib.get_close_matches(str(name), list(ops), n=1, cutoff=0.5)
        hint = f"; did you mean '{guess[0]}'?" if guess else f"; available: {', '.join(sorted(ops))}"
        raise TransformSpecError(f"unknown transform '{name}' (not in paddle.vision.transforms){hint}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise TransformSpecError(f"arguments must be a mapping of keyword arguments, got {short_repr(kwargs)}", op=name)
    cls = ops[name]
    params = [p for p in inspect.signature(cls).parameters if p not in ("self",)]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise TransformSpecError(f"bad arguments {short_repr(kwargs)}: {e}; it accepts: {', '.join(params)}",
                                 op=name) from None
    try:
        cls(**kwargs)                      # constructors assert on bad values (sizes, ranges)
    except Exception as e:                 # noqa: BLE001 -- any constructor failure is a config error
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise TransformSpecError(f"bad arguments {short_repr(kwargs)}: paddle.vision.transforms.{name} rejects them "
                                 f"({detail})", op=name) from None
    return name, dict(kwargs)


def to_chw_float32(x):
    """The transform output as a CHW float32 numpy array (paddle Tensor, PIL or HWC uint8 in)."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    if not isinstance(x, np.ndarray):                 # a PIL image: ToTensor's scaling
        x = np.asarray(x, dtype=np.float32) / 255.0
        x = x[:, :, None] if x.ndim == 2 else x
        x = x.transpose(2, 0, 1)
    elif x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
        x = x[:, :, None] if x.ndim == 2 else x
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


# paddle.vision transforms that draw no random number: a pipeline of these alone gives an image
# the same array every epoch, which cache_images can then keep instead of the decoded image
DETERMINISTIC_TRANSFORMS = frozenset({"Resize", "CenterCrop", "Pad", "Grayscale", "ToTensor", "Normalize",
                                      "Transpose"})


class TransformPipeline:
    """callable(PIL.Image) -> CHW float32 numpy array; picklable for worker processes."""

    def __init__(self, specs):
        self.specs = [dict(s) for s in (specs or [])]
        ops = available_transforms()
        self.ops = []
        for i, item in enumerate(self.specs):
            try:
                name, kwargs = check_transform(item)
            except TransformSpecError as e:
                where = f"transforms[{i}]" + (f".{e.op}" if e.op else "")
                raise DataError(f"{where}: {e}") from None
            self.ops.append((name, ops[name](**kwargs)))

    def __call__(self, img):
        for name, op in self.ops:
            img = op(img)
        return to_chw_float32(img)

    @property
    def deterministic(self):
        return all(name in DETERMINISTIC_TRANSFORMS for name, _ in self.ops)

    def __repr__(self):
        return f"TransformPipeline({[name for name, _ in self.ops]})"


def build_transforms(specs):
    """[{Name: kwargs}, ...] -> callable(PIL.Image) -> CHW float32 numpy array."""
    return TransformPipeline(specs)


def sample_seed(seed, epoch, index):
    """Two 32-bit seeds (python random, numpy) from (seed, epoch, index) alone."""
    ss = np.random.SeedSequence([int(seed) % (1 << 63), int(epoch), int(index)])
    return [int(s) for s in ss.generate_state(2)]


# The generators are process-global: two loader threads (paddle reads in a thread when
# num_workers=0, and an abandoned iterator's thread may still be prefetching) would reseed
# each other between a seed and its draws. The lock makes seed -> transforms -> restore atomic.
_RNG_LOCK = threading.RLock()


def _new_lock_after_fork():
    # a worker forked while another thread held the lock would otherwise wait for ever
    global _RNG_LOCK
    _RNG_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


@contextlib.contextmanager
def sample_rng(seed, epoch, index):
    """Seed python `random` and `numpy.random` for one sample, then restore both: a sample's
    augmentation depends only on (seed, epoch, index), not on which worker or thread ran it.
    (Code outside sample_rng that draws from these generators in another thread at the same
    moment could still interleave; nothing in ppmobilenet does.)"""
    py_seed, np_seed = sample_seed(seed, epoch, index)
    if get_worker_info() is not None:
        # a loader worker process owns its generators and runs one sample at a time: nothing to
        # restore, and saving numpy's state is 0.16 ms, a sixth of a demo image's pipeline
        random.seed(py_seed)
        np.random.seed(np_seed)
        yield
        return
    with _RNG_LOCK:
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(py_seed)
        np.random.seed(np_seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
