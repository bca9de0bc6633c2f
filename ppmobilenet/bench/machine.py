"""What the numbers were measured on: CPU model and cores, load, versions, date."""
import datetime
import os
import platform
import subprocess
import sys


def _lscpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    info = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        info[k.strip()] = v.strip()
    return info


def _version(module):
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info():
    cpu = _lscpu()
    from ppmobilenet.cpu import available_cores, cpu_flags, cpu_vendor
    flags = cpu_flags()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu.get("Model name") or platform.processor(),
        "cpu_vendor": cpu_vendor(),
        "cores_available": available_cores(),
        "threads_per_core": cpu.get("Thread(s) per core"),
        "isa": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                 "amx_int8", "fma"}),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "memory_gib": _mem_total_gib(),
        "load_average_start": load_average(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {m: _version(m) for m in ("paddlepaddle", "onnxruntime", "paddle2onnx", "onnx",
                                              "torch", "numpy")},
        "gpu": _gpu(),
    }


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 1024.0 ** 2, 1)
    except (OSError, ValueError, IndexError):
        return None


def _gpu():
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
