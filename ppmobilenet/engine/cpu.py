"""CPU threads for Paddle's math. Paddle computes on ONE thread unless OMP_NUM_THREADS is set
when it is imported, so the tools call use_all_cores() before `import paddle`."""
import os
import sys


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_all_cores():
    """Set OMP_NUM_THREADS (when the user has not) to the cores shared among the processes a
    paddle.distributed.launch started on this machine. Returns the value in effect."""
    if "OMP_NUM_THREADS" in os.environ:
        return os.environ["OMP_NUM_THREADS"]
    if "paddle" in sys.modules:
        return None  # too late to matter; leave the environment alone
    local = int(os.environ.get("PADDLE_LOCAL_SIZE") or os.environ.get("PADDLE_TRAINERS_NUM") or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, available_cores() // max(1, local)))
    return os.environ["OMP_NUM_THREADS"]
