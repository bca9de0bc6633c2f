"""The one switch the trainer calls: the fastest CPU path this machine has for a model's
depthwise convolutions, and one log line that says which and why."""
import logging
import os

from . import ops
from .build import BuildFailed
from .layers import use_compiled_kernels, use_packed_depthwise
from .packed import MAX_PLANE
from .pointwise import MAX_PLANE as POINTWISE_PLANE, use_pointwise_matmul

ENV = "PPMOBILENET_CPU_KERNELS"  # "0" turns the compiled kernels off, like Global.cpu_kernels


def compiled_wanted(config_value=True, environ=None):
    env = os.environ if environ is None else environ
    return bool(config_value) and env.get(ENV, "1").strip() != "0"


def enable_for_training(model, device="cpu", compiled=True, packed=True, log=None):
    """Switch `model`'s 3x3 and 5x5 depthwise convs and its conv + BatchNorm + activation blocks, in
    place, to the compiled CPU kernels (built on first use; `compiled`: Global.cpu_kernels, also
    off with PPMOBILENET_CPU_KERNELS=0) and its 1x1 convs on small planes to matmul
    (pointwise.py), else the depthwise convs to
    the packed pure-Paddle path on small planes (`packed`: Global.cpu_packed_depthwise), else
    leave Paddle's conv. GPU (any device but "cpu") keeps Paddle's ops. Parameters, names and
    state_dict are unchanged; traced and exported programs record Paddle's own conv.
    -> "compiled", "packed" or None (what the convs now run), after one log line."""
    if device != "cpu":
        return None
    log = log or logging.getLogger("ppmobilenet.kernels")
    say = log.info
    if compiled_wanted(compiled):
        try:
            ops.load(log)
        except BuildFailed as e:
            reason, say = f"compiled CPU kernels unavailable: {e}", log.warning
        else:
            convs, blocks = use_compiled_kernels(model)
            pointwise = use_pointwise_matmul(model)
            log.info(f"compiled CPU kernels: {convs} depthwise convs, {blocks} BatchNorm + "
                     f"activation pairs; {pointwise} 1x1 convs as matrix products on planes <= "
                     f"{POINTWISE_PLANE} pixels (Global.cpu_kernels, {ENV}=0 turns them off)")
            return "compiled"
    else:
        reason = f"compiled CPU kernels off (Global.cpu_kernels or {ENV}=0)"
    if packed:
        n = use_packed_depthwise(model)
        tail = (f"{n} depthwise convs take the packed CPU path on planes <= {MAX_PLANE} pixels "
                f"(Global.cpu_packed_depthwise)")
    else:
        tail = "the depthwise convs run on Paddle's own kernel"
    say(f"{reason}; {tail}")
    return "packed" if packed else None
