"""paddle.save pickles (.pdparams / .pdema / .pdopt, and .pdstates of earlier versions) read
WITHOUT running code: the one way the project opens a pickle.

paddle.load (pickle.load) on an untrusted pickle runs whatever code it carries: a pickle is a
program whose GLOBAL/STACK_GLOBAL opcodes name any importable callable and whose REDUCE/NEWOBJ/
BUILD opcodes call it. This reader answers every such name from a fixed list (_ALLOWED) and
refuses the file, naming it and the callable it asked for, on any other. What the list lets a
file build is data only: numpy arrays (from raw bytes, shape bounded by the file's size), numpy
dtypes and scalars, OrderedDict, set, frozenset, tuple, complex, slice; plain dicts, lists,
strings and numbers need no name at all. None of these runs code of the file's choosing: they
build values from values the pickle itself holds, and no class of the file's choosing (whose
methods could run) can be made.
"""
import collections
import io
import math
import os
import pickle

import numpy as np

from ..errors import short_repr
from .errors import SafeWeightsError

# What paddle.save writes for a state dict: numpy arrays in dicts (numpy 1.x and 2.x names).
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "complex"), ("builtins", "slice"),
    ("builtins", "tuple"),   # paddle.save writes a Tensor below the top level as tuple((name, array))
}
# paddle's RNG state in a .pdstates: kept as an inert stand-in, never constructed
RNG_STATE = {("paddle.base.libpaddle", "GeneratorState"), ("paddle.fluid.libpaddle", "GeneratorState")}


class Opaque:
    """Stands in for a class listed as opaque: never constructed; `.state` keeps the plain data
    the pickle gave it (BUILD), for a caller that knows how to check and rebuild it."""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler: its memo is a dict. The C one keeps an array, so one
    `LONG_BINPUT 999335818` in 70 bytes asks for gigabytes (found by tests/test_fuzz.py)."""

    def __init__(self, file, path, size, opaque=()):
        super().__init__(file, encoding="latin1")
        self.path, self.size, self.opaque = path, size, set(opaque)

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            found = super().find_class(module, name)
            return self._sized(found) if name == "_reconstruct" else found
        if (module, name) in self.opaque:
            return Opaque
        raise SafeWeightsError(
            f"{self.path}: refused to open: the pickle asks for {module}.{name}, which a weights "
            "file never needs (opening it with paddle.load could run code it carries)")

    def _sized(self, reconstruct):
        """numpy's _reconstruct(ndarray, shape, dtype) allocates `shape` before the data
        arrives: refuse a shape larger than the file (paddle.save passes (0,))."""
        def checked(subtype, shape, dtype):
            dims = shape if isinstance(shape, tuple) else (shape,)
            if subtype is not np.ndarray or not all(isinstance(d, int) and 0 <= d for d in dims) \
                    or math.prod(dims) > self.size:
                raise SafeWeightsError(f"{self.path}: not a paddle weights file (an array of "
                                       f"shape {short_repr(shape)} in a file of {self.size} bytes)")
            return reconstruct(subtype, shape, dtype)
        return checked


def read_bytes(path):
    """The whole file; SafeWeightsError naming it when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise SafeWeightsError(f"{path} does not exist") from None
    except OSError as e:
        raise SafeWeightsError(f"cannot read {path}: {e.strerror or e}") from None


def load_pickle_weights(path, opaque=()):
    """Read a paddle.save pickle of weights without running code from it: only numpy arrays,
    dtypes and plain containers may be created. -> the object (a dict of ndarrays for .pdparams).
    opaque: (module, name) classes replaced by an inert stand-in (RNG_STATE for a .pdstates)."""
    path = os.fspath(path)
    return load_pickle_bytes(read_bytes(path), path, opaque)


def load_pickle_bytes(data, path, opaque=()):
    """load_pickle_weights on the bytes of `path` already read (a .pdstates without its trailer)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path, len(data), opaque).load()
    except SafeWeightsError:
        raise
    except Exception as e:  # noqa: BLE001 -- truncated/garbage pickles raise many kinds
        raise SafeWeightsError(f"cannot read {path}: truncated or not a paddle weights file "
                               f"({type(e).__name__}: {e})") from None

