"""Conversion to safetensors: a checkpoint or a fluid-era folder -> one .safetensors file with
the architecture in its metadata, checked against the model first, never running a pickle.

Not re-exported by ppmobilenet.weights: it builds the model (ppmobilenet.models), and
ppmobilenet.models re-exports this package's fluid loader.
"""
import json
import os
import re

import numpy as np

from ..models import build_model_from_arch
from .errors import FluidParamsError, SafeWeightsError
from .fluid import load_fluid_params
from .paths import SAFETENSORS_SUFFIX, is_safetensors, strip_suffix
from .pickle_reader import RNG_STATE, load_pickle_bytes, load_pickle_weights, read_bytes
from .safetensors_file import arch_metadata, describe_metadata, read_safe_weights, save_safe_weights
from .strict import load_strict


# a .pdstates (engine/checkpoint.py) ends with this CRC line
_TRAILER = re.compile(rb"\nPPMOBILENET-CRC32 [0-9a-f]{8}\n$")


def arch_from_states(prefix):
    """The Arch a training run recorded in its .pdstates: JSON, or the pickle of earlier
    versions read by the restricted reader. Only "arch" is taken, a plain dict in both."""
    states_file = strip_suffix(prefix) + ".pdstates"
    if not os.path.exists(states_file):
        return None
    data = read_bytes(states_file)
    m = _TRAILER.search(data)
    data = data[:m.start()] if m else data
    if data[:1] == b"\x80":
        states = load_pickle_bytes(data, states_file, opaque=RNG_STATE)
    else:
        try:
            states = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise SafeWeightsError(f"{states_file}: not a training state (neither JSON nor a "
                                   "paddle pickle)") from None
    arch = states.get("arch") if isinstance(states, dict) else None
    return dict(arch) if isinstance(arch, dict) and "name" in arch else None


def default_destination(source):
    source = os.fspath(source).rstrip(os.sep)
    if os.path.isdir(source):
        return source + SAFETENSORS_SUFFIX
    return strip_suffix(source[: -len(".pdema")] if source.endswith(".pdema") else source) + SAFETENSORS_SUFFIX


def _state_of_file(source, use_ema):
    """The checkpoint file `source` names and its tensors, read without running code."""
    file = source
    if not os.path.isfile(file):
        file = strip_suffix(source) + (".pdema" if use_ema else ".pdparams")
    if not os.path.isfile(file):
        raise SafeWeightsError(f"{source}: neither {source} nor {file} exists")
    state = read_safe_weights(file)[0] if is_safetensors(file) else load_pickle_weights(file)
    if not isinstance(state, dict):
        raise SafeWeightsError(f"{file}: does not hold a state dict")
    state.pop("StructuredToParameterName@@", None)  # paddle.save's own bookkeeping
    odd = sorted(str(k) for k, v in state.items() if not isinstance(v, np.ndarray))
    if odd:
        raise SafeWeightsError(f"{file}: not a state dict of tensors ({', '.join(odd[:5])} "
                               "are not arrays)")
    return file, state


def convert_to_safetensors(source, dest=None, arch=None, use_ema=False):
    """A checkpoint (`prefix`, `x.pdparams`, `x.pdema`) or a fluid-era folder -> `dest`
    (.safetensors). arch: the config's Arch; None -> the Arch in the checkpoint's .pdstates.
    The weights are checked against the model `arch` builds (every key and shape) before
    anything is written. Never runs code from a pickle. Returns a report dict."""
    source = os.fspath(source)
    dest = os.fspath(dest) if dest else default_destination(source)
    if not dest.endswith(SAFETENSORS_SUFFIX):
        raise SafeWeightsError(f"--out {dest}: the file name must end in {SAFETENSORS_SUFFIX}")
    if arch is None and not os.path.isdir(source):
        arch = arch_from_states(source)
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
        source, state = _state_of_file(source, use_ema)
        load_strict(model, state, f"weights={source}: the weights do not fit the model built from Arch:",
                    error=SafeWeightsError)
        kind = os.path.splitext(source)[1]
    save_safe_weights(dest, model, arch, extra={"source": os.path.basename(source.rstrip(os.sep))})
    n = len(model.state_dict())
    return {"source": source, "dest": dest, "tensors": n, "arch": dict(arch),
            "message": f"wrote {dest}: {n} tensors from {source} [{kind}], "
                       f"{describe_metadata(arch_metadata(arch))}"}
