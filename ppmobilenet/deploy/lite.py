"""Paddle Lite: opt conversion of the legacy export to .nb, and running an x86 .nb on arrays.

Both go through lite_worker.py in the Lite interpreter (see lite_env for how it is found).
"""
import os
import shutil
import tempfile

import numpy as np

from .. import board
from ..io import replace_atomic
from .errors import DeployError
from .lite_env import find_lite_python
from .meta import LEGACY_FILES, read_meta, require_files, write_meta

TARGETS = ("arm", "x86")
QUANT_TYPES = ("QUANT_INT8", "QUANT_INT16")


def inspect_nb(path):
    """ppmobilenet.board.inspect_nb (the layout of a .nb, checked), its errors a DeployError."""
    return board.inspect_nb(path, error=DeployError)


def parse_targets(targets):
    """'arm,x86' or ['arm', 'x86'] -> ['arm', 'x86'] (order kept, duplicates dropped)."""
    if isinstance(targets, str):
        targets = [t for t in targets.replace(" ", "").split(",") if t]
    out = []
    for t in targets or []:
        t = str(t).lower()
        if t not in TARGETS:
            raise DeployError(f"Lite target {t!r}: choose from {', '.join(TARGETS)}")
        if t not in out:
            out.append(t)
    return out


def nb_name(meta, target):
    return f"{meta['model']['name']}_{target}.nb"


def convert_lite(export_dir, targets, runtime=None, lite_python=None, quant_type=None, fp16=False,
                 log=print, record=True):
    """Run opt on export_dir/lite/inference.pdmodel for each target -> {target: .nb path}.
    Each .nb is written under a temp name, read back (inspect_nb) and then moved into place.
    quant_type / fp16 apply to arm only: Lite 2.13's x86 runtime returns NaN for a
    weight-quantised .nb (seen), and the x86 .nb exists to check the fp32 graph here."""
    targets = parse_targets(targets)
    if not targets:
        return {}
    if quant_type and quant_type not in QUANT_TYPES:
        raise DeployError(f"quant_type {quant_type!r}: choose from {', '.join(QUANT_TYPES)}")
    require_files(export_dir, LEGACY_FILES)
    meta = read_meta(export_dir, verify=False)   # it re-records the folder
    runtime = runtime or find_lite_python(lite_python)
    lite_dir = os.path.join(export_dir, "lite")
    done = {}
    for target in targets:
        final = os.path.join(lite_dir, nb_name(meta, target))
        tmp_dir = tempfile.mkdtemp(prefix=".tmp-opt-", dir=lite_dir)
        try:
            args = ["opt", "--model-file", os.path.join(lite_dir, "inference.pdmodel"),
                    "--param-file", os.path.join(lite_dir, "inference.pdiparams"),
                    "--target", target, "--out", os.path.join(tmp_dir, "model")]
            if quant_type and target == "arm":
                args += ["--quant-type", quant_type]
            if fp16 and target == "arm":
                args.append("--fp16")
            if (quant_type or fp16) and target == "x86":
                log("lite: x86 stays fp32 (Lite's x86 runtime returns NaN for quantised weights); "
                    "the quantised arm .nb can only be checked on the device")
            result = runtime.run(args)
            info = inspect_nb(result["nb"])
            replace_atomic(result["nb"], final)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        log(f"lite: {target} -> {final} ({info['bytes']} bytes, {info['params']} params, "
            f"opt {info['opt_version']})")
        done[target] = final
        meta["lite"][target] = {"file": os.path.relpath(final, export_dir),
                                "opt_version": info["opt_version"],
                                "quant_type": quant_type if target == "arm" else None,
                                "fp16": bool(fp16) and target == "arm"}
    if record:
        write_meta(export_dir, meta)
    return done


def run_lite(nb, batches, runtime=None, lite_python=None):
    """Run an .nb on a list of float32 arrays [N, C, H, W] in the Lite interpreter -> list of
    outputs. The file is checked first: Lite aborts on a truncated or foreign one."""
    info = inspect_nb(nb)
    runtime = runtime or find_lite_python(lite_python)
    mismatch = board.version_mismatch(nb, info["opt_version"], runtime.lite_version)
    if mismatch:
        raise DeployError(mismatch)
    tmp = tempfile.mkdtemp(prefix="ppmobilenet-lite-run-")
    try:
        inputs, outputs = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(inputs, **{f"b{i:06d}": np.asarray(b, dtype="float32") for i, b in enumerate(batches)})
        runtime.run(["run", "--nb", os.path.abspath(nb), "--inputs", inputs, "--outputs", outputs])
        with np.load(outputs) as out:
            return [out[k] for k in sorted(out.files)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
