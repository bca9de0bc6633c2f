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

    resume: {"file": name, "size": bytes} from a checkpoint's .pdstates, or None for a new file.
    """

    def __init__(self, logdir, resume=None):
        from visualdl import LogWriter  # import here: only rank 0 of a training run needs it
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        kwargs = {}
        if resume and resume.get("file"):
            path = os.path.join(logdir, resume["file"])
            if os.path.exists(path):
                if os.path.getsize(path) > resume["size"]:
                    with open(path, "r+b") as f:
                        f.truncate(resume["size"])
                kwargs["file_name"] = resume["file"]
        self.writer = LogWriter(logdir=logdir, **kwargs)
        # the record file is created lazily; make it exist now so position() has a name
        self.writer._get_file_writer()

    def scalar(self, tag, value, step):
        self.writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def image(self, tag, hwc_uint8, step):
        self.writer.add_image(tag=tag, img=hwc_uint8, step=int(step), dataformats="HWC")

    def hparams(self, params, metrics):
        self.writer.add_hparams(hparams_dict=params, metrics_list=list(metrics))

    def flush(self):
        self.writer.flush()

    def position(self):
        """Where the record file ends now (after a flush): stored in .pdstates for resume."""
        self.flush()
        path = self.writer.file_name
        return {"file": os.path.basename(path), "size": os.path.getsize(path)}

    def close(self):
        self.writer.close()


def denormalize(images, mean, std):
    """[N,C,H,W] normalized floats -> list of HWC uint8 arrays for add_image."""
    x = np.asarray(images, dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = np.clip((x * s + m) * 255.0, 0, 255).astype(np.uint8)
    return [img.transpose(1, 2, 0) for img in x]
