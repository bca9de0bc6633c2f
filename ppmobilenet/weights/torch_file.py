"""torch.save files (.pth / .pt: torchvision's published weights) read WITHOUT torch and without
running code from them.

Both of torch's formats are a pickle whose tensors point at raw storages by a persistent id:
- the zip format (torch >= 1.6): `<root>/data.pkl` plus one record `<root>/data/<key>` per storage;
- the legacy format (older files such as torchvision's first mobilenet_v2): pickles of the
  magic number, protocol and sys info, the object, the storage keys, then each storage as an
  8-byte little-endian element count and its bytes, in the order of the keys.
The pickle is read by the package's restricted unpickler, which lets through numpy's plain
containers; here torch's tensor rebuild and storage classes are let through too, as data: they
become numpy arrays, checked against the storage they index.
"""
import io
import math
import os
import zipfile

import numpy as np

from .errors import SafeWeightsError
from .pickle_reader import _RestrictedUnpickler, read_bytes

TORCH_SUFFIXES = (".pth", ".pt")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# torch storage class -> numpy dtype ("bfloat16" has none: read as uint16 and widened)
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
                  "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                  "BoolStorage": np.bool_}


class _StorageType:
    def __init__(self, name):
        self.name = name
        dtype = STORAGE_DTYPES[name]
        self.dtype = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)


class _Storage:
    """A storage the pickle names; its bytes arrive after the pickle is read."""

    def __init__(self, storage_type, key, numel):
        self.type, self.key, self.numel = storage_type, key, numel
        self.array = None


class _Pending:
    """A tensor: (storage, offset, size, stride), made an array once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _counts(values):
    return isinstance(values, tuple) and all(isinstance(v, int) and v >= 0 for v in values)


class _TorchUnpickler(_RestrictedUnpickler):
    def __init__(self, file, path, size):
        super().__init__(file, path, size)
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks: data
        return super().find_class(module, name)

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, element count[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and 0 <= pid[4] <= self.size):
            raise SafeWeightsError(f"{self.path}: not a torch weights file (a persistent id "
                                   f"{type(pid).__name__} that is not a plain storage)")
        if len(pid) == 6 and pid[5] is not None:
            raise SafeWeightsError(f"{self.path}: storage views are not supported")
        storage = self.storages.setdefault(pid[2], _Storage(pid[1], pid[2], pid[4]))
        if storage.type.name != pid[1].name or storage.numel != pid[4]:
            raise SafeWeightsError(f"{self.path}: storage {pid[2]} is named twice with other types")
        return storage

    def _rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None,
                        metadata=None):
        if not (isinstance(storage, _Storage) and isinstance(offset, int) and _counts(size)
                and _counts(stride) and len(size) == len(stride)):
            raise SafeWeightsError(f"{self.path}: not a torch weights file (a tensor that does not "
                                   "index a storage)")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if math.prod(size) else offset - 1
        if offset < 0 or last >= storage.numel:
            raise SafeWeightsError(f"{self.path}: a tensor of size {list(size)} reaches past its "
                                   f"storage of {storage.numel} elements")
        return _Pending(storage, offset, size, stride)


def _materialise(obj, path):
    if isinstance(obj, _Pending):
        s = obj.storage
        item = s.array.itemsize
        out = np.lib.stride_tricks.as_strided(s.array[obj.offset:], shape=obj.size,
                                              strides=[v * item for v in obj.stride]).copy()
        if s.type.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v, path)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, path) for v in obj)
    return obj


def _fill(storage, data, path, byteorder):
    want = storage.numel * storage.type.dtype.itemsize
    if len(data) < want:
        raise SafeWeightsError(f"{path}: storage {storage.key} is truncated ({len(data)} of "
                               f"{want} bytes)")
    storage.array = np.frombuffer(data[:want], dtype=storage.type.dtype.newbyteorder(byteorder))


def _read_zip(path, data):
    zf = zipfile.ZipFile(io.BytesIO(data))
    pickles = [n for n in zf.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
        raise SafeWeightsError(f"{path}: a zip, but not a torch.save file (no single data.pkl)")
    root = pickles[0][: -len("data.pkl")]
    byteorder = "<"
    if root + "byteorder" in zf.namelist():
        byteorder = {"little": "<", "big": ">"}.get(zf.read(root + "byteorder").decode(errors="replace"))
        if byteorder is None:
            raise SafeWeightsError(f"{path}: unknown byte order in {root}byteorder")
    unpickler = _TorchUnpickler(io.BytesIO(zf.read(pickles[0])), path, len(data))
    obj = unpickler.load()
    for key, storage in unpickler.storages.items():
        record = f"{root}data/{key}"
        try:
            info = zf.getinfo(record)
        except KeyError:
            raise SafeWeightsError(f"{path}: storage record {record} is missing") from None
        if info.file_size > len(data):  # a stored record is never larger than the archive
            raise SafeWeightsError(f"{path}: record {record} claims {info.file_size} bytes")
        _fill(storage, zf.read(record), path, byteorder)
    return obj


def _read_legacy(path, data):
    f = io.BytesIO(data)
    header = [_RestrictedUnpickler(f, path, len(data)).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or not isinstance(header[2], dict):
        raise SafeWeightsError(f"{path}: not a torch.save file (neither a zip nor torch's legacy "
                               "format)")
    unpickler = _TorchUnpickler(f, path, len(data))
    obj = unpickler.load()
    keys = _RestrictedUnpickler(f, path, len(data)).load()
    if not (isinstance(keys, list) and sorted(keys) == sorted(unpickler.storages)):
        raise SafeWeightsError(f"{path}: the storage list does not match the tensors")
    byteorder = "<" if header[2].get("little_endian", True) else ">"
    for key in keys:
        storage = unpickler.storages[key]
        count = int.from_bytes(f.read(8), "little")
        if count != storage.numel:
            raise SafeWeightsError(f"{path}: storage {key} holds {count} elements, its tensors "
                                   f"expect {storage.numel}")
        _fill(storage, f.read(count * storage.type.dtype.itemsize), path, byteorder)
    return obj


def is_torch_file(path):
    return os.fspath(path).endswith(TORCH_SUFFIXES)


def read_torch_file(path):
    """A torch.save file -> its object with every tensor an ndarray (a state dict for
    torchvision's weights). Never imports torch; never runs code from the file."""
    path = os.fspath(path)
    data = read_bytes(path)
    try:
        obj = _read_zip(path, data) if zipfile.is_zipfile(io.BytesIO(data)) else _read_legacy(path, data)
        return _materialise(obj, path)
    except SafeWeightsError:
        raise
    except Exception as e:  # noqa: BLE001 -- truncated/garbage files raise many kinds
        raise SafeWeightsError(f"{path}: truncated or not a torch weights file "
                               f"({type(e).__name__}: {e})") from None


def read_torch_state(path):
    """read_torch_file, then the state dict in it: {name: ndarray}. A training checkpoint that
    nests it under "state_dict" or "model" is unwrapped."""
    obj = read_torch_file(path)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise SafeWeightsError(f"{path}: does not hold a state dict of tensors")
    return {str(k): v for k, v in obj.items()}
