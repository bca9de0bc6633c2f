"""The one exception of the data pipeline."""


class DataError(ValueError):
    """Bad data on disk: the message names the file, and the list file:line that points at it."""
