"""Read a Paddle Lite naive-buffer (.nb) model's layout without Lite, so a truncated or foreign
file gets a clear error instead of Lite's abort (which kills the whole process).

Layout written by opt 2.13: uint16 meta_version, char[16] opt version, uint64 topology size,
the topology, then (meta_version 2) a parameter section: a 12-byte header whose uint16 at
offset 6 is the parameter count, then one block per parameter, each a uint32 size and its bytes.
tools/lite_predict.py carries the same check (it must stand alone on the board); test_lite
runs both on the same good and bad files.
"""
import os
import struct

from .errors import DeployError

HEADER = 2 + 16 + 8


def inspect_nb(path):
    """-> {"meta_version", "opt_version", "topology_bytes", "params", "bytes"}; DeployError naming
    the file when it is missing, not a Lite model, or truncated."""
    if not os.path.isfile(path):
        raise DeployError(f"Lite model {path}: not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read()
    if size < HEADER:
        raise DeployError(f"Lite model {path}: {size} bytes, too small to be a Paddle Lite .nb model")
    meta_version, = struct.unpack_from("<H", data, 0)
    raw_version = data[2:18].split(b"\0", 1)[0]
    try:
        opt_version = raw_version.decode("ascii")
    except UnicodeDecodeError:
        opt_version = ""
    if meta_version > 16 or not opt_version.startswith("v") or not opt_version.isprintable():
        raise DeployError(f"Lite model {path}: not a Paddle Lite naive-buffer model (no opt version "
                          f"in its header; was it written by paddle_lite_opt?)")
    topo, = struct.unpack_from("<Q", data, 18)
    if HEADER + topo > size:
        raise DeployError(f"Lite model {path}: truncated - its topology needs {HEADER + topo} bytes, "
                          f"the file has {size}")
    info = {"meta_version": meta_version, "opt_version": opt_version, "topology_bytes": topo,
            "params": None, "bytes": size}
    if meta_version != 2:
        return info  # an older layout: the header is all this check knows
    off = HEADER + topo
    if off + 12 > size:
        raise DeployError(f"Lite model {path}: truncated - the parameter section is missing "
                          f"({size} bytes)")
    count, = struct.unpack_from("<H", data, off + 6)
    off += 12
    for i in range(count):
        if off + 4 > size:
            raise DeployError(f"Lite model {path}: truncated - parameter {i + 1} of {count} is "
                              f"missing ({size} bytes)")
        block, = struct.unpack_from("<I", data, off)
        off += 4 + block
        if off > size:
            raise DeployError(f"Lite model {path}: truncated - parameter {i + 1} of {count} needs "
                              f"bytes up to {off}, the file has {size}")
    if off != size:
        raise DeployError(f"Lite model {path}: {size - off} unexpected bytes after its {count} "
                          f"parameters (corrupt or not a single .nb)")
    info["params"] = count
    return info
