"""Data loader worker processes that die or hang: noticed at once, reported where the loop asks
for its next batch, and never waited for without end.

Paddle's own ways of noticing a dead worker are unsafe (Paddle 3.3.1):
- its SIGCHLD handler raises SystemError in the main thread wherever that thread happens to be:
  in the middle of a training step, inside a cleanup, inside a lock;
- its reader thread looks only after the result queue has been silent for 5 s, and a main
  thread blocked in the C++ batch queue runs no Python signal handler at all;
- its shutdown joins the workers without a timeout, so one worker stuck in a read (a dead
  network mount) holds the process for ever.
So `WorkerWatch` waits on the workers' sentinels in a thread of its own. When one exits with a
nonzero code it records why and kills the iterator's batch queue: the main thread's next batch
request fails there, and ReportingDataLoader turns that into a DataError. Paddle's SIGCHLD
handler stays installed (it chains to any other handler), with its DataLoader error dropped.

The other way round, a main process that dies (SIGKILL, the OOM killer) left its workers running
for ever, each holding its memory and its batches' files in /dev/shm: Paddle's worker checks
its parent only between reads of its index queue, and that read has no timeout
(`indices_queue.get(5.0)` passes 5.0 as `block`). `follow_parent` (run in each worker) asks
the kernel for SIGHUP when the parent dies (PR_SET_PDEATHSIG) and polls the parent pid as a
fallback; the SIGHUP handler unlinks every shared memory file the worker made (batches still
queued, or held by the dead main process, which would have unlinked them) and ends the worker.
Not SIGTERM: Paddle's C handler for it in the worker exits *without* that cleanup when the
sender looks like the parent, and the death signal comes while the dying parent's other threads
still hold its pid (the worker is first handed to one of them).
"""
import ctypes
import multiprocessing.util
import os
import signal
import sys
import threading
import time
import weakref
from multiprocessing import connection

from paddle.io.multiprocess_utils import _cleanup_mmap, _set_SIGCHLD_handler

# How long a shutdown waits for each worker to finish its batch and exit before ending it.
SHUTDOWN_WAIT_S = 10.0
# How often a worker checks that its parent still runs (the fallback to PR_SET_PDEATHSIG), and
# how long it then gives its SIGHUP handler (run by the worker's main thread) before ending it
# from the watching thread.
PARENT_POLL_S = 0.5
ORPHAN_GRACE_S = 3.0
ORPHAN_SIGNAL = signal.SIGHUP                   # the controlling process is gone: a hangup
PR_SET_PDEATHSIG = 1                           # <linux/prctl.h>


def _exit_code(worker, wait_s=2.0):
    """The worker's exit code once it has exited; None if it still runs after `wait_s`.
    Another thread (Paddle's reader) may reap it first, and its sentinel can be ready a moment
    before the process is waitable: poll until the code is known."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            worker.is_alive()                  # polls the process: sets exitcode once it is gone
        except (ValueError, AssertionError, OSError):
            return None
        if worker.exitcode is not None or time.monotonic() >= deadline:
            return worker.exitcode
        time.sleep(0.01)


def _death(worker, code):
    """'pid N killed by SIGKILL' / 'pid N exited with code 3' for a multiprocessing exit code."""
    if code >= 0:
        return f"pid {worker.pid} exited with code {code}"
    try:
        return f"pid {worker.pid} killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"pid {worker.pid} killed by signal {-code}"


class WorkerWatch:
    """Watches the workers of one paddle multi-process iterator until `stop()`."""

    def __init__(self, it):
        self.died = []                         # "pid N killed by SIGKILL", in the order seen
        self._workers = list(getattr(it, "_workers", None) or [])
        self._it = weakref.ref(it)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="ppmobilenet-worker-watch", daemon=True)
        self._thread.start()

    def _run(self):
        waiting = {w.sentinel: w for w in self._workers}
        while waiting:
            ready = connection.wait(list(waiting) + [self._wake_r])
            if self._wake_r in ready:
                return
            for sentinel in ready:
                worker = waiting.pop(sentinel)
                code = _exit_code(worker)
                if code:                       # 0: a normal exit at the end of the epoch
                    self.died.append(_death(worker, code))
            if self.died:
                it = self._it()
                if it is not None:
                    it._exit_thread_unexpectedly()     # the main thread's next read fails now
                return

    def dead(self):
        """The deaths the watch saw; else the workers found dead now (paddle's reader thread may
        notice one first and fail the read before the watch has recorded it)."""
        return self.died or [_death(w, c) for w in self._workers if (c := _exit_code(w, wait_s=0))]

    def stop(self):
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)


def stop_workers(it, wait_s=SHUTDOWN_WAIT_S):
    """Shut a paddle iterator down now (an epoch that ends early: an error, a break) instead of
    when it is garbage-collected. Workers get `wait_s` each to finish their batch; one still
    running then (stuck in a read) is terminated, then killed."""
    workers = list(getattr(it, "_workers", None) or [])
    stop = getattr(it, "_try_shutdown_all", None)
    if stop is not None:
        try:
            stop(wait_s) if workers else stop()
        except Exception:  # noqa: BLE001 -- best effort; the workers are ended below
            pass
    for worker in workers:
        for end in (worker.terminate, worker.kill):
            try:
                if not worker.is_alive():
                    break
                end()
                worker.join(1.0)
            except (ValueError, AssertionError, OSError):
                break


_sigchld = {"installed": False}


def quiet_paddle_sigchld():
    """Install Paddle's SIGCHLD handler now (it is installed once per process, the first time a
    multi-process iterator starts) wrapped so that its DataLoader SystemError is dropped: the
    watch reports the death where the loop can take it. Main thread only, as signals are."""
    if _sigchld["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _set_SIGCHLD_handler()
    paddle_handler = signal.getsignal(signal.SIGCHLD)
    if not callable(paddle_handler):
        return

    def handler(signum, frame):
        try:
            paddle_handler(signum, frame)
        except SystemError as e:
            if "DataLoader process" not in str(e):
                raise

    signal.signal(signal.SIGCHLD, handler)
    _sigchld["installed"] = True


def follow_parent(parent_pid, by_main_thread):
    """In a worker process: end this worker, its shared memory files unlinked, as soon as the
    process `parent_pid` that forked it is gone, however it died (see the module docstring).

    The kernel sends the death signal when the forking *thread* ends, so it is asked for only
    when the main thread forked (a loader iterated in a short-lived thread would otherwise lose
    its workers with that thread); the parent-pid poll covers the rest, and a parent that died
    before this ran."""
    signal.signal(ORPHAN_SIGNAL, _end_orphan)
    # Paddle's worker loop may see the parent gone first and return: it unlinks its files, then
    # multiprocessing flushes the result queue, whose feeder thread makes the files of the last
    # batch. Unlink again after that flush (the queue's join finalizer has priority -5).
    multiprocessing.util.Finalize(None, _unlink_if_orphaned, args=(parent_pid,), exitpriority=-10)
    if by_main_thread:
        set_parent_death_signal(ORPHAN_SIGNAL)  # not Linux: the poll alone
    threading.Thread(target=_end_when_orphaned, args=(parent_pid,), name="ppmobilenet-parent-watch",
                     daemon=True).start()


def set_parent_death_signal(signum):
    """Ask the kernel to send this process `signum` when the thread that started it ends
    (Linux PR_SET_PDEATHSIG) -> whether it could. A parent that died before the call sends
    nothing: the caller checks its parent pid after this."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (AttributeError, OSError):
        return False


def _unlink_if_orphaned(parent_pid):
    if os.getppid() != parent_pid:
        _cleanup_mmap()


def _end_orphan(signum, frame):
    _unlink_shared_memory_and_die(signum)


def _end_when_orphaned(parent_pid):
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), ORPHAN_SIGNAL)
    time.sleep(ORPHAN_GRACE_S)     # still here: the main thread is stuck in native code
    _unlink_shared_memory_and_die(signal.SIGKILL)


def _unlink_shared_memory_and_die(signum):
    """Unlink every /dev/shm file this worker made, then die of `signum`. The queue's feeder
    thread makes a batch's files while it pickles the batch: keep the GIL from here on (no
    thread switch for 10^6 s), so no file can appear after the cleanup."""
    sys.setswitchinterval(1e6)
    _cleanup_mmap()
    if signum != signal.SIGKILL:               # SIGKILL takes no handler
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
