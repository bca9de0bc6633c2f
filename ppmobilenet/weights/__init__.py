"""Every weight format and mapping: the restricted pickle reader, .pdparams, safetensors,
fluid-era directories, and the one strict loader that names missing, unexpected and mis-shaped
tensors.

  paths.py            which file a weights path names (checkpoint prefixes, suffixes)
  pickle_reader.py    paddle.save pickles read without running code (the only pickle reader)
  safetensors_file.py .safetensors with the architecture and CRC32s in the metadata
  fluid.py            fluid-era LoDTensor files and their three naming schemes
  strict.py           the strict loader (a layout maps a file's names onto the model's)
  pretrained.py       load_pretrained / load_weights: any of the above into a model
  convert.py          convert_to_safetensors (import it from there: it builds models)
"""
from .errors import FluidParamsError, SafeWeightsError, WeightsError
from .fluid import fluid_name_map, load_fluid_params, read_fluid_tensor
from .paths import is_safetensors, strip_suffix
from .pickle_reader import load_pickle_weights
from .pretrained import load_pretrained, load_state, load_weights, pretrained_file
from .safetensors_file import (arch_from_metadata, arch_metadata, describe_metadata, read_metadata,
                               read_safe_weights, save_safe_weights)
from .strict import check_fit, load_strict

__all__ = ["WeightsError", "SafeWeightsError", "FluidParamsError", "load_fluid_params",
           "read_fluid_tensor", "fluid_name_map", "strip_suffix", "is_safetensors",
           "load_pickle_weights",
           "load_pretrained", "load_state", "load_weights", "pretrained_file", "read_safe_weights",
           "save_safe_weights", "read_metadata", "arch_metadata", "arch_from_metadata",
           "describe_metadata", "check_fit", "load_strict"]
