"""Conversion to safetensors: a checkpoint, a fluid-era folder or any published layout
Global.pretrained_model takes -> one .safetensors file in this package's names, with the
architecture in its metadata, checked against the model first, never running a pickle.

Not re-exported by ppmobilenet.weights: it builds the model (ppmobilenet.models), and
ppmobilenet.models re-exports this package's fluid loader.
"""
import json
import os
import re

from ..models import build_model_from_arch
from .errors import SafeWeightsError
from .paths import SAFETENSORS_SUFFIX, strip_suffix
from .pickle_reader import RNG_STATE, load_pickle_bytes, read_bytes
from .pretrained import load_pretrained
from .safetensors_file import arch_metadata, describe_metadata, save_safe_weights


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
    """SOURCE with the suffix .safetensors (a checkpoint prefix, a file, a folder alike)."""
    source = os.fspath(source).rstrip(os.sep)
    if os.path.isdir(source):
        return source + SAFETENSORS_SUFFIX
    if os.path.isfile(source):
        return os.path.splitext(source)[0] + SAFETENSORS_SUFFIX
    return strip_suffix(source) + SAFETENSORS_SUFFIX


def _weights_file(source, use_ema):
    """The file (or fluid-era folder) `source` names: itself, or the checkpoint prefix's
    .pdparams (.pdema with use_ema)."""
    if os.path.exists(source):
        return source
    file = strip_suffix(source) + (".pdema" if use_ema else ".pdparams")
    if not os.path.isfile(file):
        raise SafeWeightsError(f"{source}: neither {source} nor {file} exists")
    return file


def convert_to_safetensors(source, dest=None, arch=None, use_ema=False):
    """Weights -> `dest` (.safetensors) in this package's names. source: a checkpoint (`prefix`,
    `x.pdparams`, `x.pdema`), a fluid-era folder, or any file Global.pretrained_model takes
    (PaddleClas / paddle.vision .pdparams, torchvision .pth, .safetensors). arch: the config's
    Arch; None -> the Arch in the checkpoint's .pdstates. The weights go into the model `arch`
    builds through the loader Global.pretrained_model uses (every key and shape checked, the
    other lineage's weights named with the -o Arch.variant=... they need) before anything is
    written; the metadata records the Arch, variant included. Never runs code from a pickle.
    Returns a report dict."""
    source = os.fspath(source)
    dest = os.fspath(dest) if dest else default_destination(source)
    if not dest.endswith(SAFETENSORS_SUFFIX):
        raise SafeWeightsError(f"--out {dest}: the file name must end in {SAFETENSORS_SUFFIX}")
    if os.path.abspath(dest) == os.path.abspath(source):
        raise SafeWeightsError(f"{source}: already a .safetensors file: pass --out NEW_FILE")
    if arch is None and not os.path.isdir(source):
        arch = arch_from_states(source)
    if arch is None:
        raise SafeWeightsError(f"{source}: no architecture known: pass -c CONFIG (its Arch "
                               "section describes the network these weights belong to)")
    model = build_model_from_arch(arch)
    source = _weights_file(source, use_ema)
    rep = load_pretrained(model, source, skip_classifier_on_mismatch=False, key="SOURCE")
    save_safe_weights(dest, model, arch, extra={"source": os.path.basename(source.rstrip(os.sep)),
                                                "source_format": rep["format"]})
    n = len(model.state_dict())
    return {"source": source, "dest": dest, "tensors": n, "arch": dict(arch),
            "message": f"wrote {dest}: {n} tensors from {source} [{rep['format']}], "
                       f"{describe_metadata(arch_metadata(arch))}"}
