"""Data loader workers die with their main process, whatever kills it, and free their shared
memory: a real tools/train.py SIGKILLed mid-epoch, and a loader whose workers were forked by a
thread other than the main one (no kernel death signal then: the parent-pid poll ends them)."""
import os
import signal
import subprocess
import sys
import threading
import time

from engine_helpers import ROOT, TRAIN, env, tiny_config
from process_helpers import children, parent_of, running

# "within seconds": the death signal is immediate, the fallback poll runs every 0.5 s
GONE_WITHIN_S = 5.0
FIGURES = {"main processes SIGKILLed": 0, "workers orphaned": 0, "shared memory files left": 0}


def teardown_module(module):
    print("\norphan figures: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))


def _shm_files(pids):
    """Paddle names a worker's shared memory files /dev/shm/paddle_<pid>_<n>_<random>."""
    prefixes = tuple(f"paddle_{p}_" for p in pids)
    return sorted(f for f in os.listdir("/dev/shm") if f.startswith(prefixes))


def _wait_gone(pids, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not running(pids) and not _shm_files(pids):
            break
        time.sleep(0.05)
    return running(pids), _shm_files(pids)


def _lines(proc, timeout):
    """proc's stdout lines; after `timeout` s the process is killed (a hang fails, not blocks)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        yield from proc.stdout
    finally:
        timer.cancel()


def _clean_up(pids):
    """What a test that failed leaves behind: end the orphans, remove their files."""
    for p in running(pids):
        os.kill(p, signal.SIGKILL)
    for f in _shm_files(pids):
        os.remove(os.path.join("/dev/shm", f))


def _kill_and_check(parent, workers):
    held = _shm_files(workers)
    assert held, f"workers {workers} hold no shared memory: the test would prove nothing"
    parent.kill()                                    # SIGKILL: no cleanup code of its own runs
    parent.wait(30)
    FIGURES["main processes SIGKILLed"] += 1
    started = time.monotonic()
    alive, left = _wait_gone(workers, GONE_WITHIN_S)
    took = time.monotonic() - started
    FIGURES["workers orphaned"] += len(workers)
    FIGURES["shared memory files left"] += len(left)
    assert not alive, (f"loader workers {alive} still run {GONE_WITHIN_S} s after their main process "
                       f"was SIGKILLed (parents: {[parent_of(p) for p in alive]})")
    assert not left, f"{len(left)} shared memory file(s) of the dead workers left in /dev/shm: {left[:6]}"
    return took


def test_workers_of_a_sigkilled_trainer_die_and_free_shared_memory(tmp_path, data):
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "out", data, epochs=3, batch=8, workers=2,
                      Global={"eval_during_train": False})
    proc = subprocess.Popen([sys.executable, TRAIN, "-c", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env(),
                            start_new_session=True)
    workers, lines = [], []
    try:
        for line in _lines(proc, timeout=300):
            lines.append(line)
            if "iter [3/" in line:                   # mid-epoch: every worker holds batches
                workers = children(proc.pid)
                break
        out = "".join(lines)
        assert len(workers) == 2, f"expected the 2 train loader workers, found {workers}\n{out[-3000:]}"
        took = _kill_and_check(proc, workers)
        print(f"\n2 workers and their shared memory gone {took:.2f} s after the SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        _clean_up(workers)


# The loader is iterated in a thread: the kernel's death signal follows the forking thread, so
# ppmobilenet asks for it only when the main thread forks; the parent-pid poll ends these. (Paddle
# installs its SIGCHLD handler at the first iteration, which must be in the main thread.)
THREAD_SCRIPT = """
import os, sys, threading, time
sys.path.insert(0, {root!r})
import paddle
from ppmobilenet.config import load_config
from ppmobilenet.data import build_dataloader

loader = build_dataloader(load_config({config!r}), "Train")
for _ in loader:
    break

def read():
    try:
        batches = iter(loader)
        next(batches)
    except BaseException as e:
        print("failed:", repr(e), flush=True)
        os._exit(1)
    print("reading", flush=True)
    time.sleep(3600)

threading.Thread(target=read, daemon=True).start()
time.sleep(3600)
"""


def test_workers_forked_by_another_thread_die_with_the_main_process(tmp_path, data):
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "out", data, batch=8, workers=2)
    script = tmp_path / "t.py"
    script.write_text(THREAD_SCRIPT.format(root=ROOT, config=cfg))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env(),
                            start_new_session=True)
    workers, lines = [], []
    try:
        for line in _lines(proc, timeout=240):
            lines.append(line)
            if line.startswith("reading"):
                workers = children(proc.pid)
                break
        assert len(workers) == 2, f"expected 2 loader workers, found {workers}\n{''.join(lines)[-3000:]}"
        took = _kill_and_check(proc, workers)
        print(f"\n2 workers forked by a thread gone {took:.2f} s after the SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        _clean_up(workers)
