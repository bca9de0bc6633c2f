"""Compile the CPU operators of csrc/ once per machine, on first use, into the user cache.

The library lands in cache_root()/kernels/<key>/, the key a hash of everything the machine code
depends on: the sources, the compiler and its version, the flags, the CPU (-march=native) and
Paddle (the operator ABI). Several processes starting at once (launch ranks, parallel tests)
build it once: the first takes a file lock and builds, the others wait for it and load its
result. A failed build is remembered in the key's folder (the reason, in `failed.txt`), so the
next processes fall back at once instead of compiling again; deleting the folder retries.
"""
import fcntl
import glob
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time

import paddle

from ..cpu import cpu_flags, cpu_vendor
from ..io import atomic_write_text, cache_root, remove_quietly, replace_atomic

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
LIBRARY = "ppm_kernels.so"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c++17", "-fPIC", "-shared",
         "-DPADDLE_WITH_CUSTOM_KERNEL", "-D_GLIBCXX_USE_CXX11_ABI=1", "-w"]
BUILD_TIMEOUT = 900  # seconds; a first build takes 10-40 s


class BuildFailed(Exception):
    """No usable compiled kernels; the message says why in one line."""


def sources():
    return sorted(glob.glob(os.path.join(CSRC, "*.cc")))


def source_files():
    """Everything the build reads from csrc/ (sources and headers)."""
    return sorted(glob.glob(os.path.join(CSRC, "*.cc")) + glob.glob(os.path.join(CSRC, "*.h")))


def find_compiler(environ=None):
    """The C++ compiler as an argv list: $CXX if set (it must exist), else c++ / g++ / clang++
    from PATH."""
    env = os.environ if environ is None else environ
    if env.get("CXX"):
        argv = shlex.split(env["CXX"])
        path = shutil.which(argv[0], path=env.get("PATH")) if argv else None
        if path is None:
            raise BuildFailed(f"no C++ compiler: CXX={env['CXX']!r} is not an executable")
        return [path] + argv[1:]
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name, path=env.get("PATH"))
        if path:
            return [path]
    raise BuildFailed("no C++ compiler found (no c++, g++ or clang++ on PATH, and CXX unset)")


def compiler_version(cxx):
    try:
        out = subprocess.run(cxx + ["--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildFailed(f"the C++ compiler {cxx[0]} does not run: {e}") from None
    if out.returncode != 0:
        raise BuildFailed(f"the C++ compiler {cxx[0]} does not run: `--version` exited "
                          f"{out.returncode}")
    return out.stdout.strip()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def build_key(cxx, version):
    """A short hash of what the compiled library depends on."""
    parts = {
        "sources": {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
                    for p in source_files()},
        "compiler": [cxx, version], "command": compile_command(cxx, LIBRARY),
        "cpu": [platform.machine(), cpu_vendor(), _cpu_model(), sorted(cpu_flags())],
        "paddle": [paddle.__version__, paddle.version.commit, sys.version_info[:2]],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def compile_command(cxx, output):
    include = paddle.sysconfig.get_include()
    paddle_base = os.path.join(os.path.dirname(paddle.__file__), "base")  # libpaddle.so
    libs = paddle.sysconfig.get_lib()
    # Paddle runs its OpenMP on the Intel runtime it ships (libiomp5): linking against it before
    # g++'s own libgomp makes the kernels share Paddle's threads. Two runtimes in one process
    # each keep their idle threads spinning, and on a busy 2-core machine that cost the demo
    # training step 2-4x.
    openmp = (["-Wl,--as-needed", "-l:libiomp5.so"]
              if os.path.exists(os.path.join(libs, "libiomp5.so")) else [])
    return (cxx + FLAGS + ["-I", include, "-I", os.path.join(include, "third_party"),
                           "-I", sysconfig.get_paths()["include"]]  # the headers include Python.h
            + sources() + ["-o", output, "-L", paddle_base, "-L", libs] + openmp
            + ["-Wl,--no-as-needed", "-l:libpaddle.so", "-Wl,--as-needed",
               f"-Wl,-rpath,{paddle_base}", f"-Wl,-rpath,{libs}"])


def _first_error(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower()]
    return (errors or lines or ["(no output)"])[0][:300]


def library_path(log=None):
    """Build the library if this machine has not yet -> its path. Raises BuildFailed."""
    cxx = find_compiler()
    key = build_key(cxx, compiler_version(cxx))
    folder = os.path.join(cache_root(), "kernels", key)
    library, failed = os.path.join(folder, LIBRARY), os.path.join(folder, "failed.txt")
    if os.path.exists(library):
        return library
    try:
        os.makedirs(folder, exist_ok=True)
        lock = open(os.path.join(folder, "build.lock"), "w")
    except OSError as e:
        raise BuildFailed(f"cannot write the kernel cache {folder}: {e}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if os.path.exists(library):        # another process built it while we waited
            return library
        if os.path.exists(failed):
            with open(failed) as f:
                reason = f.read().strip()
            raise BuildFailed(f"{reason} (an earlier build; delete {folder} to retry)")
        return _compile(cxx, folder, library, failed, log)


def _compile(cxx, folder, library, failed, log):
    for stale in glob.glob(os.path.join(folder, "*.tmp")):  # a builder killed mid-way (we hold the lock)
        remove_quietly(stale)
    partial = os.path.join(folder, f"{LIBRARY}.{os.getpid()}.tmp")
    if log is not None:
        log.info(f"compiling the CPU kernels with {cxx[0]} into {folder} (once per machine)")
    start = time.time()
    try:
        out = subprocess.run(compile_command(cxx, partial), capture_output=True, text=True,
                             timeout=BUILD_TIMEOUT, cwd=folder)
        reason = (None if out.returncode == 0 else
                  f"the build failed ({cxx[0]} exited {out.returncode}): "
                  f"{_first_error(out.stderr + out.stdout)}")
    except subprocess.TimeoutExpired:
        reason = f"the build took over {BUILD_TIMEOUT} s and was stopped"
    except OSError as e:
        reason = f"the compiler {cxx[0]} did not start: {e}"
    if reason is not None:
        remove_quietly(partial)
        atomic_write_text(failed, reason + "\n")
        raise BuildFailed(reason)
    replace_atomic(partial, library)
    if log is not None:
        log.info(f"compiled the CPU kernels in {time.time() - start:.0f} s")
    return library
