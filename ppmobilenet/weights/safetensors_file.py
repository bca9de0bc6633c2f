"""Weights as safetensors: the format to share, because opening it cannot run code.

A `.safetensors` file is a JSON header plus raw tensor bytes. Ours carry in their metadata the
architecture (model, scale, class_num, head for MobileNetV1, variant for V2/V3) and a CRC32 of
every tensor, so a damaged byte or a missing tensor is caught and named at load time, and a file
loaded into another architecture says which `-o Arch.key=value` it needs. A file written by
another tool (no such metadata) reads too; the strict loader then checks it against the model.
"""
import json
import os
import zlib

import numpy as np
import safetensors.numpy
from safetensors import safe_open

from ..io import atomic_write_bytes
from .errors import SafeWeightsError

FORMAT = "ppmobilenet-weights"
FORMAT_VERSION = 1
ARCH_KEYS = ("model", "scale", "class_num", "head")   # "variant": files since V2/V3 lineages
V1 = "mobilenet_v1"   # one architecture in every source: a head, no variant


def _crc(array):
    return zlib.crc32(np.ascontiguousarray(array).tobytes()) & 0xFFFFFFFF


def numpy_state(state):
    """A layer, or {name: Tensor | ndarray} -> {name: contiguous ndarray}."""
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    return {str(k): np.ascontiguousarray(v.numpy() if hasattr(v, "numpy") else np.asarray(v))
            for k, v in state.items()}


def arch_metadata(arch):
    """The config's Arch section -> safetensors metadata (all values are strings there)."""
    v1 = str(arch["name"]).lower() == V1
    return {"model": str(arch["name"]), "scale": repr(float(arch.get("scale", 1.0))),
            "class_num": str(int(arch["class_num"])),
            "head": str(arch.get("head") or "") if v1 else "",
            "variant": "" if v1 else str(arch.get("variant") or "paddle")}


def arch_from_metadata(meta):
    """Metadata -> an Arch dict, or None when the file does not say (not written by us)."""
    if not all(k in meta for k in ARCH_KEYS):
        return None
    arch = {"name": meta["model"], "class_num": int(meta["class_num"]),
            "scale": float(meta["scale"])}
    if meta["head"]:
        arch["head"] = meta["head"]
    if meta.get("variant"):
        arch["variant"] = meta["variant"]
    return arch


def describe_metadata(meta):
    if not all(k in meta for k in ARCH_KEYS):
        return "no ppmobilenet architecture metadata"
    head = f", head {meta['head']}" if meta["head"] and meta["model"] == V1 else ""
    variant = f", variant {meta['variant']}" if meta.get("variant") else ""
    return f"{meta['model']} x{meta['scale']}{head}{variant}, {meta['class_num']} classes"


def arch_fixes(meta, model):
    """The `-o Arch.key=value` settings `model` lacks to take the tensors a file of ours holds
    (`meta`: its metadata), [] when it fits or the file does not say. The class count is left
    out: fine-tuning to other classes drops the classifier. Files written before variants were
    recorded say nothing of it."""
    if not all(k in meta for k in ARCH_KEYS):
        return []
    wanted = [("name", meta["model"], getattr(model, "arch_name", meta["model"]))]
    try:
        wanted.append(("scale", float(meta["scale"]), float(getattr(model, "scale", meta["scale"]))))
    except ValueError:
        pass    # an unreadable scale: the strict loader names the mis-shaped tensors
    if meta["model"] == V1 and meta["head"]:
        wanted.append(("head", meta["head"], getattr(model, "head", meta["head"])))
    if meta.get("variant"):
        wanted.append(("variant", meta["variant"], getattr(model, "variant", meta["variant"])))
    return [f"-o Arch.{key}={want}" for key, want, have in wanted if want != have]


def check_recorded_arch(meta, model, where):
    """SafeWeightsError naming `where` and the settings to change when the architecture the
    file's metadata records is not the one `model` was built as."""
    fixes = arch_fixes(meta, model)
    if fixes:
        raise SafeWeightsError(f"{where}: these are {describe_metadata(meta)} weights; the config "
                               f"builds another network: set {' '.join(fixes)}")


def save_safe_weights(path, state, arch, extra=None):
    """Write `state` (a layer, or {name: Tensor | ndarray}) to `path` as safetensors with the
    architecture and a CRC32 per tensor in the metadata, atomically. extra: more {str: str}
    metadata. -> path."""
    tensors = numpy_state(state)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), **arch_metadata(arch)}
    meta.update({str(k): str(v) for k, v in (extra or {}).items()})
    meta["crc32"] = json.dumps({k: _crc(v) for k, v in sorted(tensors.items())})
    path = os.fspath(path)
    try:
        return atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=meta))
    except OSError as e:
        raise SafeWeightsError(f"cannot write {path}: {e.strerror or e}") from None


def _open(path, read):
    """safe_open `path` and hand it to read(f); every failure a SafeWeightsError naming it."""
    try:
        with safe_open(path, framework="np") as f:
            return read(f)
    except FileNotFoundError:
        raise SafeWeightsError(f"{path} does not exist") from None
    except OSError as e:
        raise SafeWeightsError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 -- SafetensorError, or numpy on a bad dtype/shape
        raise SafeWeightsError(f"{path}: damaged, truncated or not a safetensors file ({e})") from None


def read_metadata(path):
    """Only the metadata (the header is read and checked, the tensors are not)."""
    return _open(os.fspath(path), lambda f: f.metadata() or {})


def read_safe_weights(path):
    """-> ({name: ndarray}, metadata). Every problem is a SafeWeightsError naming `path`:
    not found, not safetensors, truncated, a newer format, a tensor the metadata lists but the
    file lacks, a tensor whose bytes fail their CRC32."""
    path = os.fspath(path)
    meta, tensors = _open(path, lambda f: (f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}))
    if meta.get("format") == FORMAT:
        _check_ours(path, meta, tensors)
    return tensors, meta


def _check_ours(path, meta, tensors):
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
