"""One run per output folder: a training run claims Global.output_dir before it writes anything.

- A lock: fcntl.flock on <output_dir>/train.lock, held for the run's life. A second process
  training into the folder fails at once. The kernel drops a flock when its holder dies (SIGKILL
  included), so a killed run leaves no stuck lock; the file itself stays (removing it would let
  two processes lock two different files of one name).
- A fresh run refuses a folder holding another run's checkpoints (it would overwrite their
  best_model): resume with Global.checkpoints inside the folder, pick a new Global.output_dir, or
  set Global.overwrite_output=true, which removes the old checkpoints when the new run saves its
  first one (a run that fails before then has lost nothing).
Only rank 0 claims the folder: the ranks of one launch share it (the trainer tells the others).
"""
import errno
import fcntl
import glob
import os
import re
import time

from ..config import ConfigError
from ..errors import PPMobileNetError
from ..io import pid_alive, remove_quietly
from ..weights.paths import CHECKPOINT_SUFFIXES, strip_suffix
from .checkpoint import read_states

LOCK_FILE = "train.lock"
EPOCH_SET = re.compile(r"epoch_\d+")
# A lock held after its holder died belongs to the holder's children (data loader workers), which
# die with it within seconds; wait that long before calling the folder busy.
ORPHAN_GRACE_S = 15.0


class FolderInUse(PPMobileNetError):
    """Another process is training into the output folder."""
    title = "output folder in use"


def checkpoint_sets(folder):
    """The prefixes of the checkpoint files directly in `folder` (`latest`, `best_model`, ...)."""
    found = set()
    for suffix in CHECKPOINT_SUFFIXES:
        found.update(strip_suffix(p) for p in glob.glob(os.path.join(glob.escape(folder), "*" + suffix)))
    return sorted(found)


class RunFolder:
    """The claim of one run on its output folder; release() (or the process's end) gives it up."""

    def __init__(self, path, lock_fd, stale_sets):
        self.path, self._fd = path, lock_fd
        self.stale_sets = stale_sets   # another run's checkpoints, removed at this run's first save

    def remove_stale_sets(self):
        """Remove the replaced run's checkpoint files (Global.overwrite_output) -> their prefixes."""
        removed, self.stale_sets = self.stale_sets, []
        for prefix in removed:
            for path in glob.glob(glob.escape(prefix) + ".pd*"):
                if path[len(prefix):].split(".tmp.")[0] in CHECKPOINT_SUFFIXES:
                    remove_quietly(path)
        return removed

    def release(self):
        if self._fd is not None:
            os.close(self._fd)    # closing the descriptor drops the flock
            self._fd = None


def claim_output_dir(output_dir, checkpoints=None, overwrite=False):
    """Lock `output_dir` for this run (creating it) and check that it may train there.
    checkpoints: Global.checkpoints (a resume from inside the folder may use it).
    -> RunFolder. ConfigError for a folder that cannot be one or holds another run's checkpoints,
    FolderInUse when another process trains there."""
    _make_folder(output_dir)
    fd = _lock(output_dir)
    try:
        # a resume from this folder continues the run whose checkpoints these are
        sets = [] if _resumes_inside(checkpoints, output_dir) else checkpoint_sets(output_dir)
        if sets and not overwrite:
            raise ConfigError(_occupied_message(output_dir, sets, checkpoints))
        return RunFolder(output_dir, fd, sets)
    except BaseException:
        os.close(fd)
        raise


def _make_folder(output_dir):
    if not output_dir:
        raise ConfigError("Global.output_dir is empty: name the folder the run writes to")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"Global.output_dir={output_dir} is a file, not a folder: choose another "
                          "-o Global.output_dir=...")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"Global.output_dir={output_dir}: cannot create the folder "
                          f"({e.strerror or e})") from None


def _lock(output_dir):
    path = os.path.join(output_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"Global.output_dir={output_dir}: cannot write {path} ({e.strerror or e})") from None
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise ConfigError(f"Global.output_dir={output_dir}: cannot lock {path} "
                                  f"({e.strerror or e})") from None
            holder = _holder(fd)
            if holder is not None and not pid_alive(holder) and time.monotonic() < deadline:
                time.sleep(0.2)   # a dead run's workers still hold it: they exit within seconds
                continue
            os.close(fd)
            who = f"process {holder}" if holder is not None else "another process"
            raise FolderInUse(f"Global.output_dir={output_dir} is in use: {who} is training into it "
                              f"(it holds {path}). Wait for that run to end, or train into another "
                              "folder: -o Global.output_dir=...") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd):
    """The pid the lock's holder wrote into the file, or None."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _resumes_inside(checkpoints, output_dir):
    if not checkpoints:
        return False
    here = os.path.realpath(output_dir)
    return os.path.dirname(os.path.realpath(strip_suffix(checkpoints))) == here


def _occupied_message(output_dir, sets, checkpoints):
    names = ", ".join(os.path.basename(p) for p in sets[:6]) + (", ..." if len(sets) > 6 else "")
    start = (f"resuming from Global.checkpoints={checkpoints} would write into it" if checkpoints
             else "a new run would overwrite them")
    newest = _newest_set(sets)
    resume = f"continue that run: -o Global.checkpoints={newest}; or " if newest else ""
    return (f"Global.output_dir={output_dir} holds another run's checkpoints ({names}); {start}. "
            f"Either {resume}train into a new folder: -o Global.output_dir=...; or replace that "
            "run: -o Global.overwrite_output=true (its checkpoints are removed when this run saves "
            "its first one)")


def _newest_set(sets):
    """The set a resume of that run would start from: the newest by global_step among the sets
    that load; on a tie `latest`, then the epoch_N set (best_model is saved first in an epoch).
    None when none loads. Of the epoch_N sets only the highest N is read (each read checks the
    CRC of every file in the set, and completes a set a kill left mixed, as a resume would)."""
    epochs = [p for p in sets if EPOCH_SET.fullmatch(os.path.basename(p))]
    last_epoch = max(epochs, key=lambda p: int(os.path.basename(p)[len("epoch_"):]), default=None)
    best = None
    for prefix in sets:
        if prefix in epochs and prefix != last_epoch:
            continue
        try:
            step = read_states(prefix).get("global_step")
        except PPMobileNetError:
            continue                # damaged, foreign, or bare weights: nothing to resume
        if not isinstance(step, int):
            continue
        rank = (step, os.path.basename(prefix) == "latest", prefix == last_epoch)
        if best is None or rank > best[0]:
            best = (rank, prefix)
    return best[1] if best else None
