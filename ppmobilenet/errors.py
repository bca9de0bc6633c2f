"""The one base class of every error the project raises on purpose.

Each package keeps its own error type (ConfigError, DataError, FluidParamsError, CheckpointError,
DeployError) and its usual built-in base; all of them also derive from PPMobileNetError, so a
caller (a CLI, a fuzz test) can tell "ppmobilenet refused this input and said why" from a bug.
The class says how a command reports it: `exit_status` (the process exit code) and `title` (the
start of the printed message). This module imports nothing of the package: every other imports it.
"""
import reprlib


class PPMobileNetError(Exception):
    """Bad input or an unusable file; the message names the file, line, key or tensor at fault."""
    exit_status = 1          # a bad config overrides it with 2 (ConfigError)
    title = "error"


def short_repr(value, limit=80):
    """repr() for an error message, bounded: a YAML alias bomb ("billion laughs") is a small file
    but an exponential tree, whose full repr would never finish. Short values print as repr()."""
    text = _ShortRepr(limit).repr(value)
    return text if len(text) <= 3 * limit else text[:3 * limit - 3] + "..."


class _ShortRepr(reprlib.Repr):
    def __init__(self, limit):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxtuple, self.maxset = 3, 6, 6, 6, 6
        self.maxstring = self.maxother = self.maxlong = limit

    def repr_dict(self, x, level):           # keep the mapping's own order (reprlib sorts)
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in list(x.items())[:self.maxdict]]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"

