"""Which file a weights path names: `out/best_model`, `out/best_model.pdparams` and the set's
other members share one prefix; a .safetensors file is the format to share."""
import os

CHECKPOINT_SUFFIXES = (".pdparams", ".pdopt", ".pdema", ".pdstates")   # paddle.save pickles
SAFETENSORS_SUFFIX = ".safetensors"


def strip_suffix(path):
    """`out/latest.pdparams` and `out/latest` both name the prefix `out/latest`."""
    path = os.fspath(path)
    for s in CHECKPOINT_SUFFIXES:
        if path.endswith(s):
            return path[: -len(s)]
    return path


def is_safetensors(path):
    return os.fspath(path).endswith(SAFETENSORS_SUFFIX)


def is_pickle(path):
    return os.fspath(path).endswith(CHECKPOINT_SUFFIXES)
