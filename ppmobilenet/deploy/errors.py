"""The one error type of the deploy package: every message names the file, key or tensor at fault."""
from ..errors import PPMobileNetError


class DeployError(RuntimeError, PPMobileNetError):
    """Export, conversion, check or prediction failed for a reason the user can act on."""


class LiteUnavailable(DeployError):
    """No Python interpreter with paddlelite could be found (the message says how to get one)."""


class CheckFailed(DeployError):
    """A converted model disagrees with Paddle Inference beyond the tolerance."""
