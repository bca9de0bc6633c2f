"""Console + <output_dir>/train.log lines, and the VisualDL writer.

VisualDL shows ONE record file per log directory (the newest). A resumed run therefore appends to
the file it wrote before instead of starting a new one, after cutting it back to the size it had
when the checkpoint was saved: records written after that point (by a run that was killed) would
otherwise show a curve that runs ahead and then jumps back.
"""
import logging
import os
import sys

import numpy as np
from visualdl import LogWriter

LOGGER_NAME = "ppmobilenet"


def get_logger(output_dir=None, rank=0):
    """Console for every rank (prefixed on rank > 0); train.log (appended) for rank 0 only."""
    log = logging.getLogger(LOGGER_NAME)
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    prefix = f"[rank {rank}] " if rank else ""
    fmt = logging.Formatter(f"[%(asctime)s] {prefix}%(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    log.addHandler(console)
    if output_dir and rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "train.log"), encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def flush_logger(log):
    for h in log.handlers:
        h.flush()


def visualdl_command(logdir, port=8040):
    return f"visualdl --logdir {logdir} --host 127.0.0.1 --port {port}"


class VisualDLWriter:
    """visualdl.LogWriter at `logdir` that can continue the record file of a previous run.

    The record file is made at the first record, not before: VisualDL shows only the newest file
    of a folder, and a run that failed before logging anything would otherwise leave an empty one
    that hides the curves of the run before it.
    resume: {"file": name, "size": bytes} from a checkpoint's .pdstates (checked by
    resume_problem), or None for a new file.
    """

    def __init__(self, logdir, resume=None):
        self.logdir = logdir
        self._resume = resume
        self._writer = None

    def _open(self):
        if self._writer is None:
            os.makedirs(self.logdir, exist_ok=True)
            kwargs = {}
            if self._resume and self._resume.get("file"):
                path = os.path.join(self.logdir, self._resume["file"])
                if os.path.exists(path):
                    if os.path.getsize(path) > self._resume["size"]:
                        with open(path, "r+b") as f:
                            f.truncate(self._resume["size"])
                    kwargs["file_name"] = self._resume["file"]
            self._writer = LogWriter(logdir=self.logdir, **kwargs)
            # the file writer is made lazily too; make it now so position() has a name
            self._writer._get_file_writer()
        return self._writer

    def scalar(self, tag, value, step):
        self._open().add_scalar(tag=tag, value=float(value), step=int(step))

    def image(self, tag, hwc_uint8, step):
        self._open().add_image(tag=tag, img=hwc_uint8, step=int(step), dataformats="HWC")

    def hparams(self, params, metrics):
        self._open().add_hparams(hparams_dict=params, metrics_list=list(metrics))

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def position(self):
        """Where the record file ends now (after a flush): stored in .pdstates for resume.
        Nothing written yet: the position resumed from (still true), or None."""
        if self._writer is None:
            return dict(self._resume) if self._resume else None
        self.flush()
        path = self._writer.file_name
        return {"file": os.path.basename(path), "size": os.path.getsize(path)}

    def close(self):
        if self._writer is not None:
            self._writer.close()


def resume_problem(position, logdir):
    """Why a checkpoint's VisualDL position must not be used, or None. A resume cuts the named
    file back to `size`: it must be a VisualDL record file directly inside `logdir` (the name
    comes from a file, which may have been crafted to cut another one)."""
    if position is None:
        return None
    if not isinstance(position, dict):
        return f"'vdl' is {type(position).__name__}, not a mapping of file and size"
    name, size = position.get("file"), position.get("size")
    if not isinstance(name, str) or "vdlrecords" not in name or "\0" in name or \
            os.path.basename(name) != name or name in (".", ".."):
        return f"vdl.file {name!r} is not the name of a VisualDL record file in {logdir}"
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"vdl.size {size!r} is not a byte count"
    path = os.path.join(logdir, name)
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(logdir):
        return f"vdl.file {name!r}: {path} leads outside {logdir} (a symbolic link)"
    return None


def denormalize(images, mean, std):
    """[N,C,H,W] normalized floats -> list of HWC uint8 arrays for add_image."""
    x = np.asarray(images, dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.clip((x * s + m) * 255.0, 0, 255).astype(np.uint8)
    return [img.transpose(1, 2, 0) for img in x]
