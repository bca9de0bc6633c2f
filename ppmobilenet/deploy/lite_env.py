"""Where Paddle Lite lives: find an interpreter that has paddlelite, or provision one.

paddlelite 2.13rc0 ships wheels for CPython 3.8-3.10 only (and needs numpy<2), while the project
runs on newer Pythons; so Lite usually runs in a second interpreter. Search order:
  1. the interpreter named explicitly (--lite-python / Export.lite_python),
  2. $PPMOBILENET_LITE_PYTHON,
  3. this interpreter, if paddlelite imports here,
  4. the project's provisioned venv ($PPMOBILENET_LITE_VENV or <cache root>/lite-venv, the cache
     root being $PPMOBILENET_CACHE or ~/.cache/ppmobilenet).
A named interpreter that does not work is an error, never silently replaced by another.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.util import find_spec

from ..io import atomic_write_text, cache_root
from .errors import DeployError, LiteUnavailable

LITE_REQUIREMENTS = ("paddlelite==2.13rc0", "numpy<2", "Pillow")
SUPPORTED_PYTHONS = ("3.10", "3.9", "3.8")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lite_worker.py")
READY_MARKER = ".ppmobilenet-lite-ready"


def default_venv_dir():
    return os.environ.get("PPMOBILENET_LITE_VENV") or os.path.join(cache_root(), "lite-venv")


def venv_python(venv_dir):
    return os.path.join(venv_dir, "bin", "python")


def run_worker(python, args, timeout=600):
    """Run lite_worker.py under `python`; -> its result dict. A crash (Lite aborts on what it
    cannot read) becomes a DeployError carrying the end of Lite's own log."""
    fd, result = tempfile.mkstemp(prefix="ppmobilenet-lite-", suffix=".json")
    os.close(fd)
    os.remove(result)
    try:
        try:
            proc = subprocess.run([python, WORKER, *args, "--result", result],
                                  capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise DeployError(f"Lite interpreter {python}: not found") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"Lite interpreter {python}: `{args[0]}` ran past {timeout} s") from None
        if proc.returncode != 0 or not os.path.isfile(result):
            log = (proc.stdout + proc.stderr).strip().splitlines()
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit code {proc.returncode}")
            raise DeployError(f"Paddle Lite `{args[0]}` failed under {python} ({how}):\n  "
                              + "\n  ".join(log[-12:]))
        with open(result) as f:
            return json.load(f)
    finally:
        if os.path.exists(result):
            os.remove(result)


class LiteRuntime:
    """An interpreter that runs paddlelite: .python, .lite_version, .source (how it was found)."""

    def __init__(self, python, info, source):
        self.python, self.source = python, source
        self.lite_version = info.get("lite_version")
        self.python_version = info.get("python_version")

    def run(self, args, timeout=600):
        return run_worker(self.python, args, timeout=timeout)

    def __repr__(self):
        return (f"LiteRuntime({self.python}, lite {self.lite_version}, "
                f"python {self.python_version}, from {self.source})")


def probe(python, source):
    try:
        info = run_worker(python, ["version"], timeout=120)
    except DeployError as e:
        raise DeployError(f"{source} names {python}, which cannot run Paddle Lite: {e}\n"
                          f"{fix_hint()}") from None
    return LiteRuntime(python, info, source)


def fix_hint():
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tool = os.path.join(here, "tools", "provision_lite.py")
    return ("Fix: run\n"
            f"    {sys.executable} {tool}\n"
            f"  (it builds {default_venv_dir()} from a python3.10/3.9/3.8 found on PATH or in pyenv "
            f"and installs {' '.join(LITE_REQUIREMENTS)}),\n"
            "  or point $PPMOBILENET_LITE_PYTHON / --lite-python at a Python 3.8-3.10 where\n"
            f"    pip install {' '.join(repr(r) if '<' in r else r for r in LITE_REQUIREMENTS)}\n"
            "  has been run.")


def find_lite_python(explicit=None):
    """-> LiteRuntime, or LiteUnavailable saying what was tried and the command that fixes it."""
    if explicit:
        return probe(explicit, "--lite-python / Export.lite_python")
    env = os.environ.get("PPMOBILENET_LITE_PYTHON")
    if env:
        return probe(env, "$PPMOBILENET_LITE_PYTHON")
    tried = []
    if find_spec("paddlelite") is not None:
        # Same interpreter, still a child process: a Lite abort must not kill the caller.
        return probe(sys.executable, "this interpreter")
    tried.append(f"this interpreter ({sys.executable}, Python {sys.version.split()[0]}) has no paddlelite")
    default = venv_python(default_venv_dir())
    if os.path.isfile(default):
        return probe(default, f"the provisioned venv {default_venv_dir()}")
    tried.append(f"no provisioned venv at {default_venv_dir()}")
    tried.append("$PPMOBILENET_LITE_PYTHON is not set")
    raise LiteUnavailable("Paddle Lite is not available (paddlelite==2.13rc0 has wheels for Python "
                          "3.8-3.10 only): " + "; ".join(tried) + ".\n" + fix_hint())


# ---------- provisioning ----------

def _python_version(python):
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_base_python():
    """A working CPython 3.10 / 3.9 / 3.8: on PATH, else through pyenv (whose python3.X shims
    fail unless a version is selected, so the real binary under `pyenv prefix` is used).
    -> (path, version, where) or None."""
    for ver in SUPPORTED_PYTHONS:
        exe = shutil.which(f"python{ver}")
        if exe and _python_version(exe) == ver:
            return exe, ver, "PATH"
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            names = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True,
                                   timeout=60).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            names = []
        for ver in SUPPORTED_PYTHONS:
            matches = sorted((n for n in names if n == ver or n.startswith(ver + ".")),
                             key=lambda n: [int(p) if p.isdigit() else 0 for p in n.split(".")],
                             reverse=True)
            for name in matches:
                prefix = subprocess.run([pyenv, "prefix", name], capture_output=True, text=True,
                                        timeout=60).stdout.strip()
                exe = os.path.join(prefix, "bin", f"python{ver}")
                if prefix and os.path.isfile(exe) and _python_version(exe) == ver:
                    return exe, ver, f"pyenv {name}"
    return None


def provision(venv_dir=None, base_python=None, log=print):
    """Create (or reuse) a venv with paddlelite; -> LiteRuntime of its interpreter."""
    venv_dir = os.path.abspath(venv_dir or default_venv_dir())
    python = venv_python(venv_dir)
    if os.path.isfile(os.path.join(venv_dir, READY_MARKER)) and os.path.isfile(python):
        try:
            rt = probe(python, f"the provisioned venv {venv_dir}")
            log(f"lite venv {venv_dir} is ready (Paddle Lite {rt.lite_version}, "
                f"Python {rt.python_version})")
            return rt
        except DeployError as e:
            log(f"lite venv {venv_dir} is broken, rebuilding it: {e}")
    if base_python:
        ver = _python_version(base_python)
        if ver not in SUPPORTED_PYTHONS:
            raise DeployError(f"--python {base_python}: Python {ver or '?'} cannot install "
                              f"paddlelite==2.13rc0; it needs one of {', '.join(SUPPORTED_PYTHONS)}")
        where = "--python"
    else:
        found = find_base_python()
        if found is None:
            raise LiteUnavailable(
                "no Python 3.10, 3.9 or 3.8 found (looked for python3.10/3.9/3.8 on PATH and in "
                "`pyenv versions`); paddlelite==2.13rc0 has wheels only for those.\n"
                "Fix: install one, e.g. `pyenv install 3.10.13` or `apt-get install python3.10 "
                "python3.10-venv`, then rerun this command (or pass --python /path/to/python3.10).")
        base_python, ver, where = found
    log(f"building {venv_dir} from {base_python} (Python {ver}, found via {where})")
    if os.path.exists(venv_dir):
        shutil.rmtree(venv_dir)
    os.makedirs(os.path.dirname(venv_dir), exist_ok=True)
    try:
        subprocess.run([base_python, "-m", "venv", venv_dir], check=True)
        subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        *LITE_REQUIREMENTS], check=True)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(venv_dir, ignore_errors=True)
        raise DeployError(f"provisioning {venv_dir} failed: `{' '.join(e.cmd)}` exited "
                          f"{e.returncode} (see its output above)") from None
    rt = probe(python, f"the new venv {venv_dir}")
    atomic_write_text(os.path.join(venv_dir, READY_MARKER), f"{rt.lite_version}\n")
    log(f"lite venv ready: Paddle Lite {rt.lite_version}, Python {rt.python_version}")
    return rt
