"""What the board script tools/lite_predict.py and the package share: reading an image into RGB,
checking a Paddle Lite .nb before Lite sees it (its layout, and its sha256 against the one
export_meta.json records), the Lite predictor itself, top-k rows, and the command-line type of
their counts (threads, batch size, top-k).

Standard library, numpy and Pillow only (plus paddlelite where a predictor is made): the board
has no paddle, and Lite's interpreter (Python <= 3.10, numpy < 2) imports this module too
(deploy/lite_worker.py). Like ppmobilenet.io, errors are raised as `error`, the caller's class.
"""
import argparse
import os
import struct

import numpy as np
from PIL import Image, ImageOps

from .io import sha256_file

NB_HEADER = 2 + 16 + 8          # uint16 meta version, char[16] opt version, uint64 topology size


# ------------------------------------------------------------------ images

def load_image(path, error=ValueError):
    """Open `path` as an RGB PIL image: EXIF rotation applied (as phone photos need); grayscale,
    16-bit, RGBA, palette and CMYK images converted. Any failure is an `error` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()                      # decode now: a truncated file fails here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except FileNotFoundError:
        raise error(f"image not found: {path}") from None
    except IsADirectoryError:
        raise error(f"image path is a directory: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncation
        raise error(f"cannot read image {path}: not a readable image ({e})") from None


def _to_rgb(img):
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: PIL's convert("RGB") clips instead of scaling
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


# ------------------------------------------------------------------ the .nb file

def inspect_nb(path, error=ValueError):
    """Read a naive-buffer (.nb) model's layout without Lite, which aborts the whole process on
    a truncated or foreign file. -> {"meta_version", "opt_version", "topology_bytes", "params",
    "bytes"}; `error` naming the file when it is missing, not a Lite model, or truncated.

    Layout written by opt 2.13: uint16 meta_version, char[16] opt version, uint64 topology size,
    the topology, then (meta_version 2) a parameter section: a 12-byte header whose uint16 at
    offset 6 is the parameter count, then one block per parameter, each a uint32 size and its bytes.
    """
    if not os.path.isfile(path):
        raise error(f"Lite model {path}: not found")
    with open(path, "rb") as f:
        data = f.read()
    size = len(data)
    if size < NB_HEADER:
        raise error(f"Lite model {path}: {size} bytes, too small to be a Paddle Lite .nb model")
    meta_version, = struct.unpack_from("<H", data, 0)
    opt_version = data[2:18].split(b"\0", 1)[0].decode("ascii", "replace")
    if meta_version > 16 or not opt_version.startswith("v") or not opt_version.isprintable() \
            or "\ufffd" in opt_version:
        raise error(f"Lite model {path}: not a Paddle Lite naive-buffer model (no opt version "
                    f"in its header; was it written by paddle_lite_opt?)")
    topo, = struct.unpack_from("<Q", data, 18)
    if NB_HEADER + topo > size:
        raise error(f"Lite model {path}: truncated - its topology needs {NB_HEADER + topo} bytes, "
                    f"the file has {size}")
    info = {"meta_version": meta_version, "opt_version": opt_version, "topology_bytes": topo,
            "params": None, "bytes": size}
    if meta_version != 2:
        return info  # an older layout: the header is all this check knows
    off = NB_HEADER + topo
    if off + 12 > size:
        raise error(f"Lite model {path}: truncated - the parameter section is missing "
                    f"({size} bytes)")
    count, = struct.unpack_from("<H", data, off + 6)
    off += 12
    for i in range(count):
        if off + 4 > size:
            raise error(f"Lite model {path}: truncated - parameter {i + 1} of {count} is "
                        f"missing ({size} bytes)")
        off += 4 + struct.unpack_from("<I", data, off)[0]
        if off > size:
            raise error(f"Lite model {path}: truncated - parameter {i + 1} of {count} needs "
                        f"bytes up to {off}, the file has {size}")
    if off != size:
        raise error(f"Lite model {path}: {size - off} unexpected bytes after its {count} "
                    f"parameters (corrupt or not a single .nb)")
    info["params"] = count
    return info


def version_mismatch(nb, opt_version, runtime_version):
    """The error message when a .nb and the Lite runtime differ in version (Lite reads only the
    .nb of its own opt), else None (also when the runtime's version is not known)."""
    if not runtime_version or opt_version == runtime_version:
        return None
    return (f"Lite model {nb} was written by opt {opt_version} but the runtime is Paddle Lite "
            f"{runtime_version}; they must match (reconvert with the runtime's opt)")


# ------------------------------------------------------------------ checksums (export_meta.json "files")

def recorded_files(meta, meta_path, error=ValueError):
    """export_meta.json's {relative path: sha256}, each path checked to stay inside the export
    folder; {} for an export written before checksums were recorded (format_version 1)."""
    files, version = meta.get("files"), meta.get("format_version", 1)
    if files is None and isinstance(version, int) and version < 2:
        return {}
    if not isinstance(files, dict) or not files:
        raise error(f"{meta_path}: no file checksums recorded (\"files\"); re-export")
    for rel, digest in files.items():
        parts = str(rel).replace("\\", "/").split("/")
        if not isinstance(digest, str) or len(digest) != 64 or os.path.isabs(str(rel)) \
                or ".." in parts or "" in parts:
            raise error(f"{meta_path}: bad checksum entry {str(rel)[:80]!r}")
    return files


def verify_export(folder, meta, error=ValueError):
    """Every file export_meta.json records must be in `folder` with its recorded sha256: an
    `error` names the first that is missing or differs (damaged, or changed after the export)."""
    meta_path = os.path.join(folder, "export_meta.json")
    for rel, digest in recorded_files(meta, meta_path, error).items():
        path = os.path.join(folder, *rel.split("/"))
        if not os.path.isfile(path):
            raise error(f"export folder {folder}: {rel} is missing ({path}), but {meta_path} "
                        "records it (an incomplete copy of the export?)")
        if _sha256(path) != digest:
            raise error(f"{path}: its sha256 differs from the one {meta_path} records: the file "
                        "was damaged or changed after the export; copy it again or re-export")


_DIGESTS = {}     # (path, inode, size, ctime_ns) -> sha256: a process reads an export several times


def _sha256(path):
    """sha256_file, remembered while the file is unchanged (any write moves its ctime, which no
    call can set back)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_ctime_ns, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def verify_model_file(path, meta, meta_path, error=ValueError):
    """One model file (an .nb copied to a board, maybe renamed) against export_meta.json: its
    sha256 must be one the export recorded. Nothing to check for an export without checksums."""
    files = recorded_files(meta, meta_path, error)
    if files and sha256_file(path) not in set(files.values()):
        raise error(f"{path}: its sha256 matches no file {meta_path} records: the file was "
                    "damaged, changed after the export, or belongs to another export")


# ------------------------------------------------------------------ running it

def lite_version():
    """The installed paddlelite's version (its opt's), or None when it does not say."""
    from paddlelite.lite import Opt          # optional: only Lite's own interpreter has it
    return Opt().version() if hasattr(Opt, "version") else None


def lite_sets_threads():
    """Whether this Paddle Lite's MobileConfig can set its thread count: ARM builds can; PyPI's
    x86 wheel (2.13rc0) has no MobileConfig.set_threads, so a thread count changes nothing there."""
    from paddlelite.lite import MobileConfig  # optional: only Lite's own interpreter has it
    return hasattr(MobileConfig, "set_threads")


def lite_predictor(nb, threads=None):
    """A Paddle Lite predictor of an .nb (check it with inspect_nb first), on `threads` threads
    where the build can set them (lite_sets_threads)."""
    from paddlelite.lite import MobileConfig, create_paddle_predictor
    config = MobileConfig()
    config.set_model_from_file(nb)
    if threads and lite_sets_threads():
        config.set_threads(int(threads))
    return create_paddle_predictor(config)


def lite_run(predictor, batch):
    """One float32 batch [N, C, H, W] through a Lite predictor -> its output (a copy)."""
    predictor.get_input(0).from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    predictor.run()
    return predictor.get_output(0).numpy().copy()


def topk_rows(outputs, k, labels=None):
    """Per output row, the k best classes: [{"class_id", "label", "score"}, ...] (ties in id order)."""
    rows = []
    for row in outputs:
        top = np.argsort(-row, kind="stable")[:k]
        rows.append([{"class_id": int(c), "label": labels[c] if labels else None,
                      "score": float(row[c])} for c in top])
    return rows


def positive_int(text):
    """argparse type of a count (threads, batch size, top-k): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value
