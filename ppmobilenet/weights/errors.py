"""The errors of weight files: every message names the file (and the tensor) at fault."""
from ..errors import PPMobileNetError


class WeightsError(ValueError, PPMobileNetError):
    """A weights file, or a checkpoint set, that cannot be used."""


class SafeWeightsError(WeightsError):
    """A .safetensors file, or a pickle the restricted reader refused."""


class FluidParamsError(WeightsError):
    """A fluid-era weight file or directory that cannot be loaded."""
