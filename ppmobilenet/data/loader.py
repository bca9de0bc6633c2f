"""build_dataloader: paddle.io.DataLoader + ShardedBatchSampler + the bad-sample policy.

Why failures travel as data: an exception raised inside paddle's DataLoader machinery hangs
the single-process loader (num_workers=0) for ever and reaches the caller of a multi-process
one as an unrelated "Blocking queue is killed" SystemError (Paddle 3.3.1). So the dataset is
wrapped: a failing sample becomes a `_Failure` record, the collate function drops failures and
sends them along with the batch as a JSON string, and `ReportingDataLoader.__iter__` (in the
main thread) turns them into a DataError or, with `skip_bad_samples`, into the report.

Bad-sample policy (DataLoader.<mode>.dataset.skip_bad_samples):
- false (default): the first missing / unreadable / corrupt image raises DataError naming the
  image and the list file:line that lists it.
- true: such samples are dropped from their batch (a batch that loses every sample is not
  yielded), and at the end of each pass a WARNING on the `ppmobilenet.data` logger says how many
  and which. The records also accumulate in `loader.bad_samples`; the engine takes them with
  `pop_bad_samples(loader)` -> [{"path", "line", "reason"}] (line is "list.txt:12" or None) to
  write them into its own log. An epoch in which every sample failed is a DataError.
- A transform that raises, or a batch whose images differ in shape, is always a DataError
  (that is the config, not the data).

Epochs: `build_dataloader(..., epoch=e, start_batch=k)` builds a loader for one epoch; or keep
one loader and call `loader.set_epoch(e, start_batch=0)` before iterating it again (do not use
persistent workers: workers copy the dataset, epoch included, when an iteration starts).
`loader.start()` begins a pass ahead of its iteration (the workers fill their queues meanwhile);
`loader.close()` ends a started pass nothing iterated.
`len(loader)` is the number of batches in the full epoch; `loader.next_batch` is the sampler
position after the last batch yielded (start_batch + batches pulled), for checkpoints.
"""
import gc
import json
import logging
import multiprocessing.queues
import os
import re
import sys
import threading
import traceback

import numpy as np
import paddle

from .datasets import SampleError, build_dataset
from .errors import DataError
from .sampler import ShardedBatchSampler
from .worker_watch import WorkerWatch, follow_parent, quiet_paddle_sigchld, stop_workers

logger = logging.getLogger("ppmobilenet.data")


class _Failure:
    __slots__ = ("path", "line", "kind", "reason")

    def __init__(self, path, line, kind, reason):
        self.path, self.line, self.kind, self.reason = path, line, kind, reason


class _GuardedDataset(paddle.io.Dataset):
    """Never raises: a failing item comes back as a _Failure (see the module docstring)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        try:
            if getattr(self.dataset, "batch_transforms", None) is not None:
                return self.dataset.batch_item(idx)   # the pixels are resampled per batch, later
            return self.dataset[idx]
        except SampleError as e:
            return _Failure(e.path, e.origin, e.kind, str(e))
        except Exception as e:  # noqa: BLE001 -- a bug must still reach the main thread
            return _Failure(None, None, "error", f"sample {idx}: {type(e).__name__}: {e}\n"
                                                 f"{traceback.format_exc()}")

    def __getattr__(self, name):          # label_names, class_num ... of the real dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def collate_with_failures(items):
    """[(image, label) | _Failure] -> [images [N,C,H,W] float32, labels [N] int64, report JSON]."""
    good = [it for it in items if not isinstance(it, _Failure)]
    bad = [{"path": f.path, "line": f.line, "kind": f.kind, "reason": f.reason}
           for f in items if isinstance(f, _Failure)]
    images, labels = np.zeros((1,), np.float32), np.zeros((1,), np.int64)   # placeholders for n == 0
    if good:
        shapes = {tuple(np.shape(x)) for x, _ in good}
        if len(shapes) > 1:
            bad.append({"path": None, "line": None, "kind": "batch",
                        "reason": f"images in one batch have different shapes {sorted(shapes)}: end the "
                                  f"transforms with a fixed-size op (CenterCrop, RandomResizedCrop, "
                                  f"Resize with [h, w])"})
            good = []
        else:
            images = np.stack([x for x, _ in good])
            if images.dtype.kind == "f":           # int64 rows are batch_item's (transforms_on_batch)
                images = images.astype(np.float32, copy=False)
            labels = np.asarray([y for _, y in good], dtype=np.int64)
    # a JSON string rides through paddle's queues as structure, not as a tensor
    return [images, labels, json.dumps({"n": len(good), "bad": bad})]


class ReportingDataLoader(paddle.io.DataLoader):
    """A paddle.io.DataLoader yielding (images, labels) with the bad-sample policy above."""

    def __init__(self, dataset, batch_sampler, num_workers=0, use_shared_memory=True, mode="Train",
                 **kwargs):
        self._worker_start = kwargs["worker_init_fn"] = _WorkerStart(kwargs.get("worker_init_fn"))
        super().__init__(_GuardedDataset(dataset), batch_sampler=batch_sampler,
                         collate_fn=collate_with_failures, num_workers=num_workers,
                         use_shared_memory=use_shared_memory, return_list=True, **kwargs)
        self.source_dataset = dataset
        self._batch_transforms = getattr(dataset, "batch_transforms", None)
        self.mode = mode
        self.skip_bad_samples = bool(getattr(dataset, "skip_bad_samples", False))
        self.bad_samples = []
        self.next_batch = batch_sampler.start_batch
        self._started = None  # (paddle's iterator, our generator) of start()

    def set_epoch(self, epoch, start_batch=0):
        self.close()
        self.source_dataset.set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch, start_batch)
        self.next_batch = start_batch

    def start(self):
        """Start the pass now: the workers start and fill their queues while the caller does
        something else (the trainer: the evaluation and checkpoints of the epoch before); the
        next iteration takes this pass. close() ends it if it is not wanted."""
        if self._started is None:
            self._started = self._begin()
        return self

    def close(self):
        """End a pass that start() began and nothing iterated (its workers stop now)."""
        if self._started is not None:
            it, _ = self._started
            self._started = None
            stop_workers(it)

    def __iter__(self):
        started, self._started = self._started or self._begin(), None
        return started[1]

    def _begin(self):
        if self.num_workers > 0:
            quiet_paddle_sigchld()         # before the workers start: see worker_watch.py
            self._worker_start.before_fork()
            # Garbage left in reference cycles (a finished pass's paddle objects) would otherwise
            # be collected in a forked worker, whose copies of Paddle's locks may be held: seen
            # as a worker hung on a futex at its start.
            gc.collect()
        it = super().__iter__()
        return it, self._batches(it)

    def _raise(self, rec):
        hint = ""
        if rec["kind"] == "read":
            hint = (f"\n(set DataLoader.{self.mode}.dataset.skip_bad_samples=true to skip such images "
                    f"and have them reported at the end of the epoch)")
        raise DataError(rec["reason"] + hint)

    def _next(self, it, watch):
        """next(it), with a worker process that died (OOM killer, a crash in native code) turned
        into a DataError that says so; paddle reports it as "Blocking queue is killed"."""
        try:
            return next(it)
        except StopIteration:
            raise
        except Exception:  # noqa: BLE001 -- re-raised unless a worker is found dead
            dead = watch.dead() if watch is not None else []
            if not dead:
                raise
            raise DataError(_worker_died(self.mode, "; ".join(dead))) from None

    def _batches(self, it):
        self.next_batch = self.batch_sampler.start_batch
        new_bad, seen = [], 0
        watch = WorkerWatch(it) if self.num_workers > 0 else None
        try:
            while True:
                try:
                    images, labels, report = self._next(it, watch)
                except StopIteration:
                    break
                report = json.loads(report)
                self.next_batch += 1
                for rec in report["bad"]:
                    if rec["kind"] != "read" or not self.skip_bad_samples:
                        self._raise(rec)
                    rec = {"path": rec["path"], "line": rec["line"], "reason": rec["reason"]}
                    new_bad.append(rec)
                    self.bad_samples.append(rec)
                if report["n"] == 0:
                    continue
                seen += report["n"]
                if self._batch_transforms is not None:
                    images = self._batch_transforms(images.numpy())
                yield images, labels
        finally:
            if watch is not None:
                watch.stop()
            stop_workers(it)
        if new_bad:
            shown = "\n  ".join(r["reason"] for r in new_bad[:20])
            more = f"\n  ... and {len(new_bad) - 20} more" if len(new_bad) > 20 else ""
            logger.warning("DataLoader.%s: skipped %d bad sample(s) this epoch (skip_bad_samples):\n  %s%s",
                           self.mode, len(new_bad), shown, more)
            if seen == 0:
                raise DataError(f"DataLoader.{self.mode}: every sample of this pass failed to load; "
                                f"first: {new_bad[0]['reason']}")


# A worker that cannot hand a batch over exits with this code (see _WorkerStart).
HANDOFF_EXIT = 75


class _WorkerStart:
    """The worker_init_fn: what every worker sets up before its first batch, then the user's
    own worker_init_fn. `before_fork()` (in the main process) records who the parent is; the
    forked workers see it.

    - The worker dies with the main process, whatever kills it (worker_watch.follow_parent).
    - A batch that cannot be sent to the main process (its shared memory file cannot be sized:
      /dev/shm full, a file-size limit, too many open files) is dropped by multiprocessing's
      queue thread with a printed traceback, and the main process then waits for it for ever
      while the worker lives on. End the worker instead: the main process sees a dead worker
      and raises a DataError that says why."""

    def __init__(self, user_fn=None):
        self.user_fn = user_fn
        self.parent_pid, self.by_main_thread = os.getpid(), True

    def before_fork(self):
        self.parent_pid = os.getpid()
        self.by_main_thread = threading.current_thread() is threading.main_thread()

    def __call__(self, worker_id):
        follow_parent(self.parent_pid, self.by_main_thread)
        multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(_handoff_failed)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def _handoff_failed(e, obj):
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"ppmobilenet data loader worker {os.getpid()}: cannot hand a batch to the main "
          f"process: {type(e).__name__}: {first}", file=sys.stderr, flush=True)
    os._exit(HANDOFF_EXIT)


def _worker_died(mode, what):
    if re.search(rf"code {HANDOFF_EXIT}\b", what):
        return (f"DataLoader.{mode}: a data loader worker process could not hand a batch to the "
                f"main process and stopped ({what}): shared memory (/dev/shm) full, a file-size "
                f"limit or too many open files; free space or set DataLoader.{mode}.loader."
                f"use_shared_memory=false")
    return (f"DataLoader.{mode}: a data loader worker process died: {what}. If the system ran "
            f"out of memory (see `dmesg`), lower DataLoader.{mode}.loader.num_workers, or set it "
            f"to 0 to read in the main process")


def pop_bad_samples(loader):
    """The bad samples skipped since the last call: [{"path", "line", "reason"}]; clears them."""
    out = list(getattr(loader, "bad_samples", []))
    if hasattr(loader, "bad_samples"):
        loader.bad_samples.clear()
    return out


def build_dataloader(cfg, mode, rank=0, world_size=1, epoch=0, start_batch=0, dataset=None):
    """A DataLoader over DataLoader.<mode> of cfg for one rank of `world_size`.

    Per-card batch is sampler.batch_size (global batch = that x world_size). Order, shard and
    augmentation follow (Global.seed, epoch, rank, world_size) only; start_batch skips the first
    batches of the epoch exactly. Pass `dataset` to reuse one built by build_dataset.
    """
    if mode not in ("Train", "Eval"):
        raise ValueError(f"mode must be 'Train' or 'Eval', got {mode!r}")
    if cfg["Global"]["seed"] is None and world_size > 1:
        raise ValueError("Global.seed is null with world_size > 1: every rank must shuffle with the same "
                         "seed; draw one on rank 0, broadcast it and put it into cfg['Global']['seed']")
    section = cfg["DataLoader"][mode]
    dataset = dataset if dataset is not None else build_dataset(cfg, mode)
    dataset.set_epoch(epoch)
    sampler = ShardedBatchSampler(len(dataset), section["sampler"]["batch_size"],
                                  shuffle=section["sampler"]["shuffle"], drop_last=section["sampler"]["drop_last"],
                                  seed=dataset.seed, epoch=epoch, rank=rank, world_size=world_size,
                                  start_batch=start_batch, pad=(mode == "Train"))
    return ReportingDataLoader(dataset, sampler, num_workers=section["loader"]["num_workers"],
                               use_shared_memory=section["loader"]["use_shared_memory"], mode=mode)
