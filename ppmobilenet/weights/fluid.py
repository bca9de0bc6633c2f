"""Fluid-era weights: one file per variable in the fluid LoDTensor format, as save_vars /
save_persistables wrote them, read and mapped onto our state-dict names.

Three naming schemes are recognised (see docs/migration.md):
- "demo": the seed's unnamed parameters, auto-named by fluid: conv2d_N.w_0 / .b_0,
  batch_norm_N.w_0 (scale) .b_0 (offset) .w_1 (mean) .w_2 (variance), fc_N.w_0 / .b_0;
- "mobilenet_v1": the released MobileNetV1 names conv1_weights ... fc7_offset;
- "mobilenet_v2": the released MobileNetV2 names conv1_1_weights ... fc10_offset.
The mapping reads the model's state-dict names only (conv + batch-norm units in creation order),
so this module needs nothing of ppmobilenet.models, which re-exports it.
"""
import math
import os
import re
import struct

import numpy as np

from .errors import FluidParamsError
from .strict import classifier_keys, load_strict

# fluid VarType.Type -> numpy dtype, for the types a parameter can have.
_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32,
           6: np.float64, 20: np.uint8, 21: np.int8}
# Optimizer accumulators and counters that save_persistables writes beside the weights.
_OPTIMIZER_STATE = re.compile(r"(_velocity_\d+|_moment\d?_\d+|_beta\d_pow_acc_\d+|"
                              r"^learning_rate_\d+|@LR_DECAY_COUNTER@|@STEP_COUNTER@)")
# The released files' unit names: MobileNetV1's blocks, and MobileNetV2's blocks per group
# (conv2_1 ... conv8_1), the layout of those files rather than of our model.
V1_BLOCK_NAMES = ["conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1",
                  "conv5_2", "conv5_3", "conv5_4", "conv5_5", "conv5_6", "conv6"]
V2_GROUP_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
_BN_SUFFIXES = ("weight", "bias", "_mean", "_variance")


# ------------------------------------------------------------------ the file format

def _varint(buf, pos, path):
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise FluidParamsError(f"{path}: truncated tensor description")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _parse_tensor_desc(desc, path):
    """TensorDesc protobuf: field 1 data_type (varint), field 2 dims (int64, packed or not)."""
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        key, pos = _varint(desc, pos, path)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            dtype, pos = _varint(desc, pos, path)
        elif field == 2 and wire == 0:
            dim, pos = _varint(desc, pos, path)
            dims.append(dim - (1 << 64) if dim >= 1 << 63 else dim)
        elif field == 2 and wire == 2:
            length, pos = _varint(desc, pos, path)
            end = pos + length
            while pos < end:
                dim, pos = _varint(desc, pos, path)
                dims.append(dim - (1 << 64) if dim >= 1 << 63 else dim)
        else:
            raise FluidParamsError(f"{path}: not a fluid tensor file (unknown field {field} in "
                                   "its tensor description)")
    if dtype not in _DTYPES:
        raise FluidParamsError(f"{path}: not a fluid tensor file (data type {dtype!r})")
    if any(d < 0 for d in dims):
        raise FluidParamsError(f"{path}: not a fluid tensor file (negative dimension {dims})")
    return np.dtype(_DTYPES[dtype]), dims


def read_fluid_tensor(path):
    """Read one file written by fluid's save_vars / save_persistables into a numpy array."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise FluidParamsError(f"cannot read {path}: {e.strerror or e}") from None

    def take(fmt, pos):
        size = struct.calcsize(fmt)
        if pos + size > len(buf):
            raise FluidParamsError(f"{path}: truncated ({len(buf)} bytes)")
        return struct.unpack_from(fmt, buf, pos)[0], pos + size

    version, pos = take("<I", 0)
    if version != 0:
        raise FluidParamsError(f"{path}: not a fluid tensor file (LoDTensor version {version})")
    lod_levels, pos = take("<Q", pos)
    if lod_levels > 16:
        raise FluidParamsError(f"{path}: not a fluid tensor file ({lod_levels} LoD levels)")
    for _ in range(lod_levels):
        level_bytes, pos = take("<Q", pos)
        pos += level_bytes
    tensor_version, pos = take("<I", pos)
    if tensor_version != 0:
        raise FluidParamsError(f"{path}: not a fluid tensor file (tensor version {tensor_version})")
    desc_size, pos = take("<i", pos)
    if desc_size < 0 or pos + desc_size > len(buf):
        raise FluidParamsError(f"{path}: truncated or not a fluid tensor file "
                               f"(description of {desc_size} bytes)")
    dtype, dims = _parse_tensor_desc(buf[pos:pos + desc_size], path)
    pos += desc_size
    count = math.prod(dims)                # Python ints: np.prod wraps around on huge shapes
    expected = pos + count * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "has trailing bytes"
        raise FluidParamsError(f"{path}: {what}: shape {dims} of {dtype} needs {expected} bytes, "
                               f"the file has {len(buf)}")
    try:
        return np.frombuffer(buf, dtype=dtype, count=count, offset=pos).reshape(dims).copy()
    except ValueError as e:                # an empty tensor with an impossible shape
        raise FluidParamsError(f"{path}: not a fluid tensor file (shape {dims}: {e})") from None


def read_fluid_dir(directory):
    """{variable name: ndarray}; optimizer state save_persistables wrote beside the weights maps
    to None (ignored, never read)."""
    tensors = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith(("__model__", ".")) or name.endswith(".pdmodel") or os.path.isdir(path):
            continue  # a saved program or stray folder, not a variable
        tensors[name] = None if _OPTIMIZER_STATE.search(name) else read_fluid_tensor(path)
    return tensors


# ------------------------------------------------------------------ the names

def detect_scheme(names):
    names = set(names)
    if any(re.match(r"^(conv2d|batch_norm|fc)_\d+\.[wb]_\d+$", n) for n in names):
        return "demo"
    if {"conv1_weights", "fc7_weights"} & names:
        return "mobilenet_v1"
    if {"conv1_1_weights", "fc10_weights"} & names:
        return "mobilenet_v2"
    sample = ", ".join(sorted(names)[:5]) or "nothing"
    raise FluidParamsError("cannot tell the naming scheme of these fluid weights (neither the "
                           "demo's conv2d_N.w_0 nor the released conv1_weights / conv1_1_weights);"
                           f" found: {sample}")


def _conv_bn_units(keys):
    """Prefixes of the conv + batch-norm units (`<p>.conv.weight`, `<p>.bn.weight`), in order."""
    present = set(keys)
    return [k[: -len(".conv.weight")] for k in keys if k.endswith(".conv.weight")
            and k[: -len(".conv.weight")] + ".bn.weight" in present]


def _unit_map(prefix, fluid_unit):
    pairs = [(f"{prefix}.conv.weight", f"{fluid_unit}_weights")]
    fluid_bn = ("scale", "offset", "mean", "variance")
    return pairs + [(f"{prefix}.bn.{s}", f"{fluid_unit}_bn_{f}") for s, f in zip(_BN_SUFFIXES, fluid_bn)]


def _released_v1_map(keys):
    units = ["conv1"] + [f"{b}_{part}" for b in V1_BLOCK_NAMES for part in ("dw", "sep")]
    pairs = [p for prefix, u in zip(_conv_bn_units(keys), units) for p in _unit_map(prefix, u)]
    return pairs + [("fc.weight", "fc7_weights"), ("fc.bias", "fc7_offset")]


def _released_v2_map(keys):
    units = ["conv1_1"]
    for group, repeats in enumerate(V2_GROUP_BLOCKS, start=2):
        for k in range(1, repeats + 1):
            units += [f"conv{group}_{k}_{part}" for part in ("expand", "dwise", "linear")]
    units.append("conv9")
    pairs = [p for prefix, u in zip(_conv_bn_units(keys), units) for p in _unit_map(prefix, u)]
    return pairs + [("fc.weight", "fc10_weights"), ("fc.bias", "fc10_offset")]


def _demo_map(keys, names):
    """Auto names, numbered from the lowest index found (fluid's counters are per process, so a
    program that built other layers first starts later)."""
    def first(family):
        found = [int(m.group(1)) for n in names for m in [re.match(rf"^{family}_(\d+)\.", n)] if m]
        return min(found, default=0)

    conv, bn, fc = first("conv2d"), first("batch_norm"), first("fc")
    units = _conv_bn_units(keys)
    pairs = []
    for i, prefix in enumerate(units):
        pairs.append((f"{prefix}.conv.weight", f"conv2d_{conv + i}.w_0"))
        fluid_bn = ("w_0", "b_0", "w_1", "w_2")
        pairs += [(f"{prefix}.bn.{s}", f"batch_norm_{bn + i}.{f}") for s, f in zip(_BN_SUFFIXES, fluid_bn)]
    if "class_conv.weight" in keys:        # MobileNetV1's demo head: a 1x1 conv with bias
        n = conv + len(units)
        pairs += [("class_conv.weight", f"conv2d_{n}.w_0"), ("class_conv.bias", f"conv2d_{n}.b_0")]
    return pairs + [("fc.weight", f"fc_{fc}.w_0"), ("fc.bias", f"fc_{fc}.b_0")]


def _is_v1(keys):
    return any(k.endswith(".depthwise.conv.weight") for k in keys)


def _is_v2(keys):
    return any(k.endswith(".expand.conv.weight") for k in keys) and "conv9.conv.weight" in keys


def fluid_name_map(layer, scheme, names=()):
    """[(our state_dict key, fluid variable name)] for `layer` under `scheme`."""
    keys = list(layer.state_dict())
    if scheme == "demo":
        return _demo_map(keys, names)
    if scheme == "mobilenet_v1" and _is_v1(keys):
        if "class_conv.weight" in keys:
            raise FluidParamsError("the released MobileNetV1 weights (conv1_weights ... fc7_offset) "
                                   "have the classic head; build MobileNetV1(head='classic')")
        return _released_v1_map(keys)
    if scheme == "mobilenet_v2" and _is_v2(keys):
        return _released_v2_map(keys)
    raise FluidParamsError(f"weights named in the released {scheme} scheme cannot load into a "
                           f"{type(layer).__name__}")


# ------------------------------------------------------------------ loading

def load_fluid_params(layer, source, skip_classifier=False):
    """Load fluid-era weights into `layer` (MobileNetV1 or MobileNetV2).

    source: a fluid persistables directory (one file per variable) or a {name: ndarray} mapping.
    skip_classifier: leave the class conv / fc untouched (fine-tuning to another class count).
    Returns {"scheme", "loaded", "skipped", "ignored"} (fluid names). Raises FluidParamsError
    naming every missing, unexpected and mis-shaped tensor; nothing is loaded then.
    """
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isdir(source):
            raise FluidParamsError(f"{source}: not a directory of fluid weights")
        tensors, where = read_fluid_dir(source), str(source)
    else:
        tensors, where = dict(source), "the given mapping"
    ignored = sorted(n for n, v in tensors.items() if v is None)
    tensors = {n: v for n, v in tensors.items() if v is not None}
    scheme = detect_scheme(tensors)
    pairs = fluid_name_map(layer, scheme, tensors)
    keys = list(layer.state_dict())
    uncovered = set(keys) - {key for key, _ in pairs}
    if uncovered:
        raise FluidParamsError(f"{type(layer).__name__} has tensors the {scheme} names do not "
                               f"cover: {', '.join(sorted(uncovered))}")
    skip = classifier_keys(keys) if skip_classifier else set()
    header = f"cannot load fluid weights ({scheme} names) from {where} into {type(layer).__name__}:"
    load_strict(layer, tensors, header, layout={fluid: key for key, fluid in pairs}, skip=skip,
                error=FluidParamsError)
    return {"scheme": scheme, "loaded": [f for k, f in pairs if k not in skip],
            "skipped": [f for k, f in pairs if k in skip], "ignored": ignored}
