"""The child process that runs tests/test_fuzz.py's calls, one at a time.

A hang inside C code (Pillow, numpy, safetensors, the YAML scanner) cannot be interrupted from
Python in the same process, and a crash would take pytest down. Here each call runs in this
child: the parent gives it HANG_SECONDS, then asks faulthandler for every thread's stack
(SIGUSR1) and kills it; a crash shows as the child's exit status. Either fails the test with the
input that caused it.

Protocol on stdin/stdout: 8-byte length + pickle. Request (target, args); reply
("ok", summary) | ("refused", error class, message) | ("raised", traceback text).
"""
import faulthandler
import os
import pickle
import signal
import struct
import sys
import traceback

HANG_SECONDS = 20


def _targets():
    from ppmobilenet.config import load_config
    from ppmobilenet.data import load_image, parse_label_file, parse_list_file
    from ppmobilenet.weights import load_pickle_weights, read_fluid_tensor, read_safe_weights
    return {"config": load_config, "image": load_image, "fluid-tensor": read_fluid_tensor,
            "list-file": parse_list_file, "label-file": parse_label_file,
            "safetensors": read_safe_weights, "pickle-weights": load_pickle_weights}


def summary(value):
    """What the parent checks of a success (a PIL image or an array is summarised)."""
    import numpy as np
    if hasattr(value, "mode") and hasattr(value, "size"):
        return {"image": True, "mode": value.mode, "size": tuple(value.size)}
    if isinstance(value, np.ndarray):
        return {"array": True, "nbytes": int(value.nbytes), "shape": list(value.shape)}
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):   # a config
        return value
    return {"type": type(value).__name__}


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(size))


def _write(stream, obj):
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def main():
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from ppmobilenet.errors import PPMobileNetError
    targets = _targets()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr             # nothing printed by a target may corrupt the replies
    _write(replies, ("ready",))
    while True:
        request = _read(requests)
        if request is None:
            return
        target, args = request
        try:
            reply = ("ok", summary(targets[target](*args)))
        except PPMobileNetError as e:
            reply = ("refused", type(e).__name__, str(e))
        except BaseException:  # noqa: BLE001 -- reported to the parent, which fails the test
            reply = ("raised", traceback.format_exc())
        _write(replies, reply)


if __name__ == "__main__":
    main()
