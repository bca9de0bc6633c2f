"""The process a run computes in: the device, the seed, and the random generators' states (saved
in a checkpoint so a resumed run draws the numbers the interrupted one would have drawn)."""
import random

import numpy as np
import paddle

from ..config import ConfigError


def resolve_device(name):
    """Global.device auto|cpu|gpu -> the paddle device string; gpu without a usable GPU is refused."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "auto":
        return "gpu" if has_gpu else "cpu"
    if name == "gpu" and not has_gpu:
        raise ConfigError("Global.device=gpu but this Paddle has no usable GPU "
                          f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use cpu or auto")
    return name


def seed_everything(seed):
    """Seed paddle, numpy and python `random` alike."""
    paddle.seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


def fresh_seed():
    """A seed of this run's own (Global.seed null)."""
    return int(np.random.SeedSequence().entropy % (2 ** 31))


def rng_state():
    """The three generators' states, in a form paddle.save / paddle.load keep as they are."""
    # numpy's key array as a list: paddle.load turns numpy arrays into tensors, and uint32
    # tensors do not exist
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"paddle": paddle.get_rng_state(),
            "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}


def set_rng_state(state):
    """Undo of rng_state(); None (a checkpoint without states) leaves the generators alone."""
    if not state:
        return
    paddle.set_rng_state(state["paddle"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(tuple(_tuples(state["python"])))


def _tuples(x):
    """random.getstate() after a save/load round trip may come back with lists for tuples."""
    return tuple(_tuples(i) for i in x) if isinstance(x, (list, tuple)) else x
