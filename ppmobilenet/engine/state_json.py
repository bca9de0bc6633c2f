"""A run's training state (what a .pdstates holds) as JSON text and back, exactly, with no way
for the file to run code: JSON has values only, and each tagged value below is rebuilt by code
of this module from checked plain data.

Python's json keeps ints exact and writes each float as its shortest repr (NaN and Infinity
included), which reads back to the same bits. The other types a state holds are tagged objects
{"__type__": ...}: tuples (random.getstate), numpy arrays and scalars (their raw bytes),
paddle Tensors, paddle's RNG states (GeneratorState: device, seed, offset and the Mersenne
Twister's text), and dicts whose keys are not all strings. Anything else is refused when the
state is saved, never written in a form that would read back as something else.
"""
import base64
import json
import math

import numpy as np
import paddle
from paddle.base.libpaddle import GeneratorState

TAG = "__type__"
NUMERIC_KINDS = "biufc"      # numpy dtype kinds an array may have (no objects, no records)
MT_WORDS = 313               # std::mt19937_64 as text: 312 words of state and the position


class StateFormatError(ValueError):
    """A JSON .pdstates that does not decode to a training state (the caller names the file)."""


def dumps(state):
    """The training state -> JSON text. TypeError naming the value it cannot keep exactly."""
    return json.dumps(_encode(state, "states"), indent=1, allow_nan=True)


def loads(text):
    """JSON text written by dumps -> the training state; StateFormatError saying what is wrong."""
    try:
        return _decode(json.loads(text))
    except RecursionError:
        raise StateFormatError("nested too deeply to be a training state") from None
    except ValueError as e:          # json's own errors (JSONDecodeError) and ours
        raise StateFormatError(str(e)) from None


# ------------------------------------------------------------------ encoding

def _encode(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and TAG not in value:
            return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
        return {TAG: "dict", "items": [[_encode(k, where), _encode(v, f"{where}.{k}")]
                                       for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        return _array(value, where)
    if isinstance(value, np.generic):
        return {TAG: "numpy_scalar", "array": _array(np.asarray(value), where)}
    if isinstance(value, paddle.Tensor):
        return {TAG: "tensor", "array": _array(value.numpy(), where)}
    if isinstance(value, GeneratorState):
        device, seed, offset, engine = value.__getstate__()
        return {TAG: "paddle_rng", "device": device, "seed": seed, "offset": offset,
                "engine": bytes(engine).decode("ascii")}
    raise TypeError(f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be "
                    "stored in a .pdstates (plain values, tuples, numpy arrays, tensors and RNG "
                    "states only)")


def _array(arr, where):
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise TypeError(f"{where}: an array of dtype {arr.dtype} cannot be stored in a .pdstates")
    return {TAG: "ndarray", "dtype": arr.dtype.str, "shape": list(arr.shape),
            "data": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")}


# ------------------------------------------------------------------ decoding

def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if TAG not in value:
        return {k: _decode(v) for k, v in value.items()}
    kind = value[TAG]
    if kind == "tuple":
        return tuple(_decode(v) for v in _field(value, "items", list))
    if kind == "dict":
        pairs = _field(value, "items", list)
        if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise StateFormatError("a tagged dict whose items are not [key, value] pairs")
        return {_hashable(_decode(k)): _decode(v) for k, v in pairs}
    if kind == "ndarray":
        return _ndarray(value)
    if kind == "numpy_scalar":
        arr = _ndarray(_field(value, "array", dict))
        if arr.shape != ():
            raise StateFormatError(f"a numpy scalar of shape {list(arr.shape)}")
        return arr[()]
    if kind == "tensor":
        return paddle.to_tensor(_ndarray(_field(value, "array", dict)))
    if kind == "paddle_rng":
        return generator_state(_field(value, "device", int), _field(value, "seed", int),
                               _field(value, "offset", int), _field(value, "engine", str))
    raise StateFormatError(f"unknown value type {str(kind)[:40]!r}")


def _field(obj, name, kind):
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StateFormatError(f"a {obj.get(TAG)!r} value without a valid {name!r}")
    return value


def _hashable(key):
    try:
        hash(key)
    except TypeError:
        raise StateFormatError(f"a dict key of type {type(key).__name__}") from None
    return key


def _ndarray(obj):
    if obj.get(TAG) != "ndarray":
        raise StateFormatError("an array entry that is not an ndarray")
    try:
        dtype = np.dtype(_field(obj, "dtype", str))
    except TypeError:
        raise StateFormatError(f"array dtype {obj['dtype'][:20]!r} is not a numpy dtype") from None
    shape = _field(obj, "shape", list)
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
        raise StateFormatError(f"array dtype {dtype} is not numeric")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise StateFormatError(f"array shape {shape[:8]} is not a list of sizes")
    try:
        data = base64.b64decode(_field(obj, "data", str), validate=True)
    except ValueError:
        raise StateFormatError("array data is not base64") from None
    if math.prod(shape) * dtype.itemsize != len(data):
        raise StateFormatError(f"array of shape {shape[:8]} and dtype {dtype} with "
                               f"{len(data)} bytes of data")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def generator_state(device, seed, offset, engine):
    """paddle's GeneratorState from its plain parts (checked first: paddle would accept a short
    engine text and draw other numbers than the saved run)."""
    words = engine.split(" ")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (device, seed, offset)) \
            or len(words) != MT_WORDS or not all(w.isdigit() and w.isascii() for w in words):
        raise StateFormatError("a paddle RNG state that is not (device, seed, offset, "
                               f"{MT_WORDS} numbers)")
    state = GeneratorState.__new__(GeneratorState)
    try:
        state.__setstate__((device, seed, offset, list(engine.encode("ascii"))))
    except (RuntimeError, TypeError) as e:
        raise StateFormatError(f"a paddle RNG state paddle refuses ({e})") from None
    return state
