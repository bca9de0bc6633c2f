"""The one exception of the data pipeline."""
from ..errors import PPMobileNetError


class DataError(ValueError, PPMobileNetError):
    """Bad data on disk: the message names the file, and the list file:line that points at it."""
