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
"""
import os
import signal
import threading
import time
import weakref
from multiprocessing import connection

# How long a shutdown waits for each worker to finish its batch and exit before ending it.
SHUTDOWN_WAIT_S = 10.0


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
    from paddle.io.multiprocess_utils import _set_SIGCHLD_handler
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
