"""Temporary re-export shim: the fluid-era weights moved to ppmobilenet.weights.fluid
(models/__init__ should import from there; remove this file at integration)."""
from ..weights.fluid import (V1_BLOCK_NAMES, FluidParamsError, detect_scheme,  # noqa: F401
                             fluid_name_map, load_fluid_params, read_fluid_tensor)
