"""Process-wide CPU settings every tool applies at start-up, before `import paddle`.

- OMP_NUM_THREADS: Paddle computes on ONE thread unless it is set when paddle is imported; the
  tools share the available cores among the processes a paddle.distributed.launch started.
- MKL_DEBUG_CPU_TYPE=5 on AMD CPUs with AVX2: the MKL that Paddle ships (libmklml_intel)
  dispatches on the CPU vendor and runs its generic SSE code on AMD; 5 makes it take the AVX2
  kernels (2.6-2.8x on a 1024^3 matmul here, docs/benchmarks.md). Intel CPUs already get their
  best path, so the variable is left alone there.
- keep_freed_memory(): glibc keeps freed blocks for reuse (see its docstring).
A value the user set in the environment is never overridden.
"""
import os
import sys

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpuinfo_field(name):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_vendor():
    return _cpuinfo_field("vendor_id")


def cpu_flags():
    return set((_cpuinfo_field("flags") or "").split())


def cpu_env(environ=None):
    """Set OMP_NUM_THREADS and, on AMD with AVX2, MKL_DEBUG_CPU_TYPE in `environ` [os.environ]
    where unset. Returns {name: value} of what it set; {} for os.environ once paddle is
    imported (MKL and OpenMP read them at load time: too late to matter)."""
    env = os.environ if environ is None else environ
    if environ is None and "paddle" in sys.modules:
        return {}
    done = {}
    if "OMP_NUM_THREADS" not in env:
        local = int(env.get("PADDLE_LOCAL_SIZE") or env.get("PADDLE_TRAINERS_NUM") or 1)
        done["OMP_NUM_THREADS"] = str(max(1, available_cores() // max(1, local)))
    if "MKL_DEBUG_CPU_TYPE" not in env and cpu_vendor() == "AuthenticAMD" and "avx2" in cpu_flags():
        done["MKL_DEBUG_CPU_TYPE"] = "5"
    env.update(done)
    return done


def keep_freed_memory():
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    Paddle allocates each activation and gradient afresh on every step and frees it after; glibc
    serves blocks above 128 KiB-32 MiB with mmap and returns them with munmap, so every step
    touches fresh zeroed pages (MobileNetV1 x1.0, 224x224, batch 32: ~500,000 page faults and
    ~1 s of kernel time per training step; 6,900 faults per inference batch of 8). With mmap and
    trimming off, a step reuses the previous step's memory; the resident size stays at its peak,
    which every step reaches anyway. A no-op (False) where the C library is not glibc."""
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


def configure_cpu():
    """What every tool runs first: cpu_env() on os.environ, then keep_freed_memory()."""
    done = cpu_env()
    keep_freed_memory()
    return done
