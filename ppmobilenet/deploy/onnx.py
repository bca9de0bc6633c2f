"""ONNX export through paddle2onnx (an optional extra: pip install paddle2onnx onnxruntime)."""
import os
from importlib import import_module

from ..io import atomic_output
from .errors import DeployError
from .meta import PIR_FILES, read_meta, require_files, write_meta
from .runtimes import ONNX_FILE

OPSET = 13


def require_onnx(int8=False):
    """DeployError naming what is missing when --onnx (or --int8) cannot run here: checked before
    an export touches anything."""
    needed = ["paddle2onnx", "onnxruntime"] + (["onnx", "onnxruntime.quantization"] if int8 else [])
    missing = []
    for name in needed:
        try:
            import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        flag = "--int8" if int8 else "--onnx"
        raise DeployError(f"{flag} needs {', '.join(missing)}: pip install paddle2onnx onnxruntime "
                          "onnx (or pip install 'ppmobilenet[onnx]')")


def convert_onnx(export_dir, opset=OPSET, log=print, record=True):
    """export_dir/inference.json -> export_dir/inference.onnx (dynamic batch, input `x`)."""
    try:
        import paddle2onnx
    except ImportError:
        raise DeployError("--onnx needs paddle2onnx and onnxruntime: pip install paddle2onnx "
                          "onnxruntime (or pip install 'ppmobilenet[onnx]')") from None
    require_files(export_dir, PIR_FILES)
    final = os.path.join(export_dir, ONNX_FILE)
    try:
        with atomic_output(final, suffix=".onnx") as tmp:
            _export(paddle2onnx, export_dir, tmp, opset)
    except DeployError:
        raise
    except Exception as e:  # noqa: BLE001 -- paddle2onnx raises assorted types
        raise DeployError(f"paddle2onnx failed on {export_dir}/{PIR_FILES[0]}: "
                          f"{type(e).__name__}: {e}") from None
    log(f"onnx: {final} ({os.path.getsize(final)} bytes, opset {opset}, "
        f"paddle2onnx {paddle2onnx.__version__})")
    if record:
        meta = read_meta(export_dir, verify=False)   # it re-records the folder
        meta["onnx"] = {"file": ONNX_FILE, "opset": opset, "paddle2onnx": paddle2onnx.__version__}
        write_meta(export_dir, meta)
    return final


def _export(paddle2onnx, export_dir, out, opset):
    from paddle2onnx.utils import logging as p2o_logging
    level, p2o_logging.log_level = p2o_logging.log_level, 1  # warnings and errors only
    try:
        # optimize_tool: polygraphy's folding takes ~25 s here and changes nothing that
        # matters for this graph; paddle2onnx 2.1.0's onnxoptimizer path always fails (a
        # misspelled pass name) and falls back to the raw model anyway.
        paddle2onnx.export(os.path.join(export_dir, PIR_FILES[0]),
                           os.path.join(export_dir, PIR_FILES[1]), save_file=out,
                           opset_version=opset, enable_onnx_checker=True, optimize_tool="none")
    finally:
        p2o_logging.log_level = level
    if not os.path.isfile(out) or os.path.getsize(out) == 0:
        raise DeployError(f"paddle2onnx wrote an empty model for {export_dir}")
