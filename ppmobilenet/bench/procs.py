"""The parent's side of worker.py: start one process per engine, talk to it, collect its peak RSS."""
import json
import os
import select
import subprocess
import sys
import time

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Set per engine by the spec, never inherited from the shell that runs the benchmark.
CONTROLLED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "FLAGS_use_mkldnn",
                  "ONEDNN_VERBOSE", "DNNL_VERBOSE")


class BenchError(RuntimeError):
    """An engine failed: the message names it and carries the end of its stderr."""


class Worker:
    def __init__(self, name, spec, python=None, env=None, log_dir=None, timeout=600):
        self.name, self.spec, self.timeout = name, spec, timeout
        self.python = python or sys.executable
        full_env = {k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV}
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"{_safe(name)}.log") if log_dir else os.devnull
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.python, WORKER, json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=full_env,
                                     text=True, bufsize=1)
        self.info = None
        self.closed = None

    def _read(self, what):
        deadline = time.time() + self.timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                if line:
                    break
                self._fail(f"{what}: the process ended (exit code {self.proc.wait()})")
            if self.proc.poll() is not None:
                self._fail(f"{what}: the process ended (exit code {self.proc.returncode})")
            if time.time() > deadline:
                self.kill()
                self._fail(f"{what}: no answer in {self.timeout} s")
        reply = json.loads(line)
        if "error" in reply:
            self._fail(f"{what}: {reply['error']}")
        return reply

    def _fail(self, message):
        raise BenchError(f"engine {self.name}: {message}{self.stderr_tail()}")

    def stderr_tail(self, lines=15):
        if self.log_path == os.devnull:
            return ""
        self._log.flush()
        try:
            with open(self.log_path, errors="replace") as f:
                tail = [l.rstrip() for l in f.readlines() if l.strip()][-lines:]
        except OSError:
            return ""
        return ("\n  its stderr (" + self.log_path + "):\n    " + "\n    ".join(tail)) if tail else ""

    def wait_ready(self):
        if self.info is None:
            self.info = self._read("loading")
        return self.info

    def call(self, op, **kw):
        self.proc.stdin.write(json.dumps(dict(op=op, **kw)) + "\n")
        self.proc.stdin.flush()
        return self._read(op)

    def close(self):
        """-> {"maxrss_kb", "base_rss_kb"} (peak RSS of this engine's process)."""
        if self.closed is None and self.proc.poll() is None:
            self.closed = self.call("quit")
            self.proc.wait(timeout=60)
        self._log.close()
        return self.closed

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._log.closed:
            self._log.close()


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def start_all(engines, log_dir, timeout=600):
    """engines: [(name, spec, python, env)] -> {name: Worker}, all loaded (started together:
    imports overlap). A failed load kills the others before raising."""
    workers = {}
    try:
        for name, spec, python, env in engines:
            workers[name] = Worker(name, spec, python, env, log_dir, timeout)
        for w in workers.values():
            w.wait_ready()
    except BaseException:
        for w in workers.values():
            w.kill()
        raise
    return workers
