"""What the numbers were measured on: CPU model and cores, memory, load, versions, GPU, date."""
import datetime
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

from ppmobilenet.cpu import available_cores, cpu_flags, cpu_vendor


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _version(package):
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine_info():
    cpu = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in _run(["lscpu"]).splitlines())}
    with open("/proc/meminfo") as f:
        memory_gib = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_model": cpu.get("Model name") or platform.processor(), "cpu_vendor": cpu_vendor(),
            "cores_available": available_cores(), "threads_per_core": cpu.get("Thread(s) per core"),
            "isa": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "fma"}),
            "hypervisor": cpu.get("Hypervisor vendor"), "memory_gib": memory_gib,
            "load_average_start": list(os.getloadavg()), "python": sys.version.split()[0],
            "platform": platform.platform(), "gpu": _run(["nvidia-smi", "-L"]).strip() or None,
            "versions": {m: _version(m) for m in
                         ("paddlepaddle", "onnxruntime", "paddle2onnx", "onnx", "torch", "numpy")}}
