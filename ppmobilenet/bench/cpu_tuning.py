"""CPU settings proposed for ppmobilenet/engine/cpu.py; the benchmark measures the project with
and without them. Both are process-wide and belong at the start of the training entry point.

MKL_DEBUG_CPU_TYPE=5: the MKL that Paddle ships (libmklml_intel) dispatches on the CPU vendor and
runs its generic SSE code on AMD processors; 5 makes it take the AVX2 kernels. On Intel CPUs MKL
already picks its best path (AVX-512 where present) and forcing AVX2 could slow it down, so the
variable is set on AMD only, and never over a value the user chose.
"""
import os
import sys


def cpu_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def tune_cpu_env(environ=None):
    """Set MKL_DEBUG_CPU_TYPE=5 on AMD CPUs with AVX2 (unless set) and OMP_NUM_THREADS to the
    available cores (unless set). Call before paddle is imported; returns what it set."""
    env = os.environ if environ is None else environ
    done = {}
    if "paddle" in sys.modules and environ is None:
        return done  # MKL and OpenMP read these once, at load time: too late to matter
    if "MKL_DEBUG_CPU_TYPE" not in env and cpu_vendor() == "AuthenticAMD" and "avx2" in cpu_flags():
        env["MKL_DEBUG_CPU_TYPE"] = done["MKL_DEBUG_CPU_TYPE"] = "5"
    if "OMP_NUM_THREADS" not in env:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = done["OMP_NUM_THREADS"] = str(cores)
    return done


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory():
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    Paddle allocates each activation and gradient afresh on every step and frees it after; glibc
    serves blocks above 128 KiB-32 MiB with mmap and returns them with munmap, so every step
    touches ~2 GB of fresh zeroed pages (MobileNetV1 x1.0, 224x224, batch 32: ~500,000 page
    faults and ~1 s of kernel time per step seen). With mmap off and trimming off, a step reuses
    the previous step's memory; the resident size stays at its peak, which a step reaches anyway.
    A no-op (False) where the C library is not glibc."""
    import ctypes
    import platform
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
