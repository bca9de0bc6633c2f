"""Weights as safetensors: the format to share, because opening it cannot run code.

`.pdparams` / `.pdopt` / `.pdstates` are pickles and `paddle.load` on an untrusted one runs
whatever code it carries. A `.safetensors` file is a JSON header plus raw tensor bytes. Ours
carry in their metadata the architecture (model, scale, class_num, head) and a CRC32 of every
tensor, so a damaged byte or a missing tensor is caught and named at load time.

- save_safe_weights(path, state, arch): write (atomically) a state dict with that metadata;
- read_safe_weights(path) -> (state {name: ndarray}, metadata): checks header and CRCs;
- load_pickle_weights(path): read a .pdparams/.pdema WITHOUT running code (only numpy arrays
  and plain containers are let through), for the conversion of a file you did not make;
- convert_to_safetensors(source, dest, arch): checkpoint or fluid-era folder -> .safetensors;
- untrusted_pickle_warning(file, own_dir): the one-line warning printed before a pickle from
  outside the run's own output directory is opened.
"""
import collections
import io
import json
import math
import os
import pickle
import zlib

import numpy as np

from ..errors import short_repr
from .checkpoint import CheckpointError, strip_suffix

SUFFIX = ".safetensors"
FORMAT = "ppmobilenet-weights"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pdparams", ".pdopt", ".pdstates", ".pdema")
ARCH_KEYS = ("model", "scale", "class_num", "head")


class SafeWeightsError(CheckpointError):
    """A .safetensors file (or a pickle refused by load_pickle_weights); names the file."""


def is_safetensors(path):
    return os.fspath(path).endswith(SUFFIX)


def _crc(array):
    return zlib.crc32(np.ascontiguousarray(array).tobytes()) & 0xFFFFFFFF


def _numpy_state(state):
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    out = {}
    for k, v in state.items():
        a = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        out[str(k)] = np.ascontiguousarray(a)
    return out


def arch_metadata(arch):
    """The config's Arch section -> safetensors metadata (all values are strings there)."""
    return {"model": str(arch["name"]), "scale": repr(float(arch.get("scale", 1.0))),
            "class_num": str(int(arch["class_num"])), "head": str(arch.get("head") or "")}


def arch_from_metadata(meta):
    """Metadata -> an Arch dict, or None when the file does not say (not written by us)."""
    if not all(k in meta for k in ARCH_KEYS):
        return None
    arch = {"name": meta["model"], "class_num": int(meta["class_num"]),
            "scale": float(meta["scale"])}
    if meta["head"]:
        arch["head"] = meta["head"]
    return arch


def describe_metadata(meta):
    if not all(k in meta for k in ARCH_KEYS):
        return "no ppmobilenet architecture metadata"
    head = f", head {meta['head']}" if meta["head"] else ""
    return f"{meta['model']} x{meta['scale']}{head}, {meta['class_num']} classes"


def _write_atomic(path, data):
    """Temp file in the same folder, fsync, os.replace; a failed write leaves no temp behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise SafeWeightsError(f"cannot write {path}: {e.strerror or e}") from None


def save_safe_weights(path, state, arch, extra=None):
    """Write `state` (a layer, or {name: Tensor | ndarray}) to `path` as safetensors with the
    architecture and a CRC32 per tensor in the metadata. extra: more {str: str} metadata."""
    import safetensors.numpy

    tensors = _numpy_state(state)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), **arch_metadata(arch)}
    meta.update({str(k): str(v) for k, v in (extra or {}).items()})
    meta["crc32"] = json.dumps({k: _crc(v) for k, v in sorted(tensors.items())})
    _write_atomic(os.fspath(path), safetensors.numpy.save(tensors, metadata=meta))
    return os.fspath(path)


def _header(path, data):
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise SafeWeightsError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise SafeWeightsError(f"{path}: truncated or not a safetensors file (header of {n} "
                               f"bytes, file of {len(data)})")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafeWeightsError(f"{path}: not a safetensors file (unreadable header: {e})") from None
    if not isinstance(header, dict):
        raise SafeWeightsError(f"{path}: not a safetensors file (header is not a JSON object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise SafeWeightsError(f"{path}: not a safetensors file (__metadata__ is not an object)")
    return meta


def read_metadata(path):
    """Only the metadata (reads the header, not the tensors)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            data = head + f.read(min(n, 100 << 20))
    except OSError as e:
        raise SafeWeightsError(f"cannot read {path}: {e.strerror or e}") from None
    return _header(path, data)


def read_safe_weights(path):
    """-> ({name: ndarray}, metadata). Every problem is a SafeWeightsError naming `path`:
    not found, not safetensors, truncated, a newer format, a tensor the metadata lists but the
    file lacks, a tensor whose bytes fail their CRC32."""
    import safetensors.numpy

    path = os.fspath(path)
    data = _read_bytes(path)
    meta = _header(path, data)
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as e:  # noqa: BLE001 -- SafetensorError, or numpy on a bad dtype/shape
        raise SafeWeightsError(f"{path}: damaged or not a safetensors file ({e})") from None
    if meta.get("format") == FORMAT:
        try:
            version = int(meta.get("format_version", "1"))
        except ValueError:
            version = None
        if version is None or version > FORMAT_VERSION:
            raise SafeWeightsError(f"{path}: weights format version {meta.get('format_version')!r} "
                                   f"is newer than this ppmobilenet understands ({FORMAT_VERSION})")
        try:
            crcs = json.loads(meta.get("crc32", "{}"))
            if not isinstance(crcs, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise SafeWeightsError(f"{path}: damaged metadata (crc32: {e})") from None
        missing = sorted(k for k in crcs if k not in tensors)
        if missing:
            raise SafeWeightsError(f"{path}: missing tensor(s) {', '.join(missing)}: the file's "
                                   "metadata lists them but the file does not hold them")
        bad = sorted(k for k, c in crcs.items() if _crc(tensors[k]) != c)
        if bad:
            raise SafeWeightsError(f"{path}: damaged: CRC32 mismatch in tensor(s) {', '.join(bad)} "
                                   "(the file changed after it was written)")
    return tensors, meta


# ------------------------------------------------------------------ pickles, without their code

# What paddle.save writes for a state dict: numpy arrays in dicts (numpy 1.x and 2.x names).
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "complex"), ("builtins", "slice"),
}


class _Opaque:
    """Stands in for paddle's RNG GeneratorState in a .pdstates: kept, never constructed."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


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
            return _Opaque
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


def _read_bytes(path):
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
    opaque: (module, name) classes replaced by an inert stand-in (paddle's RNG state)."""
    path = os.fspath(path)
    data = _read_bytes(path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path, len(data), opaque).load()
    except SafeWeightsError:
        raise
    except Exception as e:  # noqa: BLE001 -- truncated/garbage pickles raise many kinds
        raise SafeWeightsError(f"{path}: truncated or not a paddle weights file "
                               f"({type(e).__name__}: {e})") from None


def untrusted_pickle_warning(file, own_dir, key="Global.pretrained_model"):
    """The one-line warning for a pickle file from outside `own_dir` (None: not known), or None
    when the file is inside the run's own output directory (this run or its predecessor wrote it)."""
    file = os.fspath(file)
    if not file.endswith(PICKLE_SUFFIXES) or not os.path.exists(file):
        return None
    if own_dir:
        own = os.path.realpath(own_dir)
        if os.path.realpath(file).startswith(own.rstrip(os.sep) + os.sep):
            return None
    # the weights of a .pdopt / .pdstates set are in its .pdparams
    src = file if file.endswith((".pdparams", ".pdema")) else strip_suffix(file) + ".pdparams"
    return (f"warning: {key}: {file} is a pickle from outside this run's output directory; "
            "opening a pickle can run any code it carries, so use only files you trust. Convert it "
            f"once, safely, with: python tools/convert_weights.py {src} -c <config> "
            f"--out {strip_suffix(file)}{SUFFIX}")


def untrusted_pickle_note(path, own_dir, key="Global.pretrained_model"):
    """untrusted_pickle_warning for a Global.pretrained_model / Global.checkpoints value (a file,
    a prefix of a .pdparams, or a fluid-era folder, which holds no pickle). None: no warning."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return None
    for file in (path, strip_suffix(path) + ".pdparams"):
        if os.path.isfile(file):
            return untrusted_pickle_warning(file, own_dir, key=key)
    return None                              # the load itself names the missing file


# ------------------------------------------------------------------ conversion

def _arch_from_states(prefix):
    """The Arch a training run recorded in its .pdstates (read without running code)."""
    states_file = strip_suffix(prefix) + ".pdstates"
    if not os.path.exists(states_file):
        return None
    states = load_pickle_weights(states_file, opaque={("paddle.base.libpaddle", "GeneratorState"),
                                                      ("paddle.fluid.libpaddle", "GeneratorState")})
    arch = states.get("arch") if isinstance(states, dict) else None
    return dict(arch) if isinstance(arch, dict) and "name" in arch else None


def default_destination(source):
    source = os.fspath(source).rstrip(os.sep)
    if os.path.isdir(source):
        return source + SUFFIX
    return strip_suffix(source[: -len(".pdema")] if source.endswith(".pdema") else source) + SUFFIX


def convert_to_safetensors(source, dest=None, arch=None, use_ema=False):
    """A checkpoint (`prefix`, `x.pdparams`, `x.pdema`) or a fluid-era folder -> `dest`
    (.safetensors). arch: the config's Arch; None -> the Arch in the checkpoint's .pdstates.
    The weights are checked against the model `arch` builds (every key and shape) before
    anything is written. Never runs code from a pickle. Returns a report dict."""
    from ..models import build_model_from_arch, load_fluid_params, FluidParamsError
    from .checkpoint import _set_strict

    source = os.fspath(source)
    dest = os.fspath(dest) if dest else default_destination(source)
    if not dest.endswith(SUFFIX):
        raise SafeWeightsError(f"--out {dest}: the file name must end in {SUFFIX}")
    if arch is None and not os.path.isdir(source):
        arch = _arch_from_states(source)
    if arch is None:
        raise SafeWeightsError(f"{source}: no architecture known: pass -c CONFIG (its Arch "
                               "section describes the network these weights belong to)")
    model = build_model_from_arch(arch)
    if os.path.isdir(source):
        try:
            load_fluid_params(model, source)
        except FluidParamsError as e:
            raise SafeWeightsError(f"{source}: {e}") from None
        kind = "fluid-era folder"
    else:
        file = source
        if not os.path.isfile(file):
            file = strip_suffix(source) + (".pdema" if use_ema else ".pdparams")
        if not os.path.isfile(file):
            raise SafeWeightsError(f"{source}: neither {source} nor {file} exists")
        if is_safetensors(file):
            state, _ = read_safe_weights(file)
        else:
            state = load_pickle_weights(file)
        if not isinstance(state, dict):
            raise SafeWeightsError(f"{file}: does not hold a state dict")
        state.pop("StructuredToParameterName@@", None)  # paddle.save's own bookkeeping
        odd = sorted(str(k) for k, v in state.items() if not isinstance(v, np.ndarray))
        if odd:
            raise SafeWeightsError(f"{file}: not a state dict of tensors ({', '.join(odd[:5])} "
                                   "are not arrays)")
        try:
            _set_strict(model, state, file, "weights")
        except CheckpointError as e:
            raise SafeWeightsError(str(e)) from None
        kind = os.path.splitext(file)[1]
        source = file
    save_safe_weights(dest, model, arch, extra={"source": os.path.basename(source.rstrip(os.sep))})
    n = len(model.state_dict())
    return {"source": source, "dest": dest, "tensors": n, "arch": dict(arch),
            "message": f"wrote {dest}: {n} tensors from {source} [{kind}], "
                       f"{describe_metadata(arch_metadata(arch))}"}
