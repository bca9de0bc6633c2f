"""ONNX export through paddle2onnx (an optional extra: pip install paddle2onnx onnxruntime)."""
import os
import tempfile

from .errors import DeployError
from .meta import PIR_FILES, read_meta, require_files, write_meta
from .predictors import ONNX_FILE

OPSET = 13


def convert_onnx(export_dir, opset=OPSET, log=print, record=True):
    """export_dir/inference.json -> export_dir/inference.onnx (dynamic batch, input `x`)."""
    try:
        import paddle2onnx
    except ImportError:
        raise DeployError("--onnx needs paddle2onnx and onnxruntime: pip install paddle2onnx "
                          "onnxruntime (or pip install 'ppmobilenet[onnx]')") from None
    require_files(export_dir, PIR_FILES)
    final = os.path.join(export_dir, ONNX_FILE)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=export_dir)
    os.close(fd)
    try:
        from paddle2onnx.utils import logging as p2o_logging
        level, p2o_logging.log_level = p2o_logging.log_level, 1  # warnings and errors only
        try:
            # optimize_tool: polygraphy's folding takes ~25 s here and changes nothing that
            # matters for this graph; paddle2onnx 2.1.0's onnxoptimizer path always fails (a
            # misspelled pass name) and falls back to the raw model anyway.
            paddle2onnx.export(os.path.join(export_dir, PIR_FILES[0]),
                               os.path.join(export_dir, PIR_FILES[1]), save_file=tmp,
                               opset_version=opset, enable_onnx_checker=True, optimize_tool="none")
        finally:
            p2o_logging.log_level = level
        if os.path.getsize(tmp) == 0:
            raise DeployError(f"paddle2onnx wrote an empty model for {export_dir}")
        os.replace(tmp, final)
    except Exception as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, DeployError):
            raise
        raise DeployError(f"paddle2onnx failed on {export_dir}/{PIR_FILES[0]}: "
                          f"{type(e).__name__}: {e}") from None
    log(f"onnx: {final} ({os.path.getsize(final)} bytes, opset {opset}, "
        f"paddle2onnx {paddle2onnx.__version__})")
    if record:
        meta = read_meta(export_dir)
        meta["onnx"] = {"file": ONNX_FILE, "opset": opset, "paddle2onnx": paddle2onnx.__version__}
        write_meta(export_dir, meta)
    return final
