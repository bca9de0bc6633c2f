"""The training loop: config -> model + data -> steps, evaluation, checkpoints, logs.

`train_one_epoch` is the loop itself (model, loader, loss, optimizer -> the epoch's metrics), with
no files and no config: tests call it in-process. `Trainer` is a run around it: it builds every
part from the config, then per epoch trains, evaluates, logs and saves.

Resume is exact: the .pdstates file carries the epoch and batch position, the global step,
the best metric and its epoch, the lr scheduler, the loss scaler, the RNG states and where the
VisualDL record file ended; batches are a pure function of (seed, epoch, index), so a resumed run
sees the very batches the interrupted one would have seen.
"""
import collections
import datetime
import functools
import gc
import glob
import math
import os
import re
import time

import numpy as np
import paddle

from ..config import ConfigError
from ..errors import PPMobileNetError
from ..data import build_dataloader, build_dataset, pop_bad_samples
from ..kernels import enable_for_training
from ..models import build_model_from_arch
from ..weights import load_pretrained, strip_suffix
from . import checkpoint as ckpt
from . import dist
from .ema import ModelEMA
from .evaluation import effective_topk, evaluate_model, topk_correct
from .logger import VisualDLWriter, denormalize, flush_logger, get_logger, resume_problem, visualdl_command
from .optim import build_grad_scaler, build_lr_scheduler, build_optimizer
from .outputs import write_labels, write_resolved_config
from .run_folder import FolderInUse, claim_output_dir
from .runtime import fresh_seed, resolve_device, rng_state, seed_everything, set_rng_state

# the VisualDL scalar tags a run writes (eval_ema/* too when EMA.use_ema)
SCALAR_TAGS = ("train/loss", "train/top1", "train/top5", "train/lr", "train/ips",
               "eval/loss", "eval/top1", "eval/top5")

# what train_one_epoch reports after each batch: the loss, the number of samples whose label is
# in the top-k for the first two ks, the batch size, and the seconds the batch and its reading took
BatchStats = collections.namedtuple("BatchStats", "loss correct samples batch_cost reader_cost")


class TrainingError(RuntimeError, PPMobileNetError):
    """The run cannot go on; the message names the epoch and step."""


class NonFiniteLoss(TrainingError):
    """train_one_epoch's report of a loss that is nan or inf: `loss`, `batch` (its place in this
    pass, 1 = the pass's first batch), `amp` (a loss scaler was on) and `amp_note` (what that
    means, "" without AMP).

    AMP stops too. The loss checked is the float32 loss before scaling, so a loss-scaler overflow
    (in the scaled gradients) never shows in it: the scaler skips that step and the run goes on.
    A non-finite loss comes from the forward pass itself, which loss scaling cannot cure (the
    scale multiplies only the gradients): skipping it as the scaler skips its overflows would go
    on with the same fault, and a NaN that crossed a BatchNorm is in its running statistics."""

    def __init__(self, loss, batch, amp=False):
        self.loss, self.batch, self.amp = loss, batch, bool(amp)
        self.amp_note = ("under AMP this is not a loss-scaler overflow (those skip their step and "
                         "the run goes on): the forward pass gave it, which a float16 activation "
                         "above 65504 also does; AMP.use_amp=false tells the two apart"
                         if amp else "")
        super().__init__(f"the training loss is {loss} at batch {batch} of this pass"
                         + (f"; {self.amp_note}" if amp else ""))


def first_non_finite(model):
    """The name of the first parameter or buffer of `model` holding nan or inf, else None."""
    for name, t in model.state_dict().items():
        if t.dtype in (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64) and \
                not bool(paddle.isfinite(t).all()):
            return name
    return None


def build_loss(loss_cfg):
    """Loss -> the training criterion: cross entropy, label smoothing Loss.epsilon."""
    return paddle.nn.CrossEntropyLoss(label_smoothing=loss_cfg["epsilon"])


def train_step(net, images, labels, loss_fn, optimizer, scheduler, scaler=None, amp_level="O1", ema=None):
    """One optimisation step (through the AMP loss scaler when one is given) -> (loss, logits)."""
    if scaler is not None:
        with paddle.amp.auto_cast(enable=True, level=amp_level):
            logits = net(images)
            loss = loss_fn(logits.astype("float32"), labels)
        scaler.scale(loss).backward()
        dist.average_gradients(net)
        scaler.step(optimizer)
        scaler.update()
    else:
        logits = net(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        dist.average_gradients(net)
        optimizer.step()
    optimizer.clear_grad()
    scheduler.step()
    if ema is not None:
        ema.update(dist.unwrap(net))
    return loss.item(), logits.detach()


def train_one_epoch(net, loader, loss_fn, optimizer, scheduler, topk=(1, 5), scaler=None, amp_level="O1",
                    ema=None, on_batch=None):
    """Train `net` on every batch of `loader` (train_step each). on_batch(images, BatchStats), if
    given, runs after each step (the Trainer logs and saves there; its time is not in the costs).
    A loss that is not finite stops the pass at once (NonFiniteLoss), before on_batch: nothing
    is logged or saved after it. Under AMP too (NonFiniteLoss says why): the scaler's own
    overflows leave the loss finite and only skip their step.
    -> this rank's means over the pass: {"loss", "top<k>" for the first two ks, "samples", "steps"}."""
    ks = list(topk)[:2]
    net.train()
    steps, samples, loss_sum, correct_sum = 0, 0, 0.0, [0.0] * len(ks)
    tic = time.time()
    for images, labels in loader:
        reader_cost = time.time() - tic
        labels = labels.reshape([-1]).astype("int64")
        loss, logits = train_step(net, images, labels, loss_fn, optimizer, scheduler, scaler, amp_level, ema)
        if not math.isfinite(loss):
            raise NonFiniteLoss(loss, steps + 1, amp=scaler is not None)
        correct = topk_correct(logits.astype("float32"), labels, ks)
        n = labels.shape[0]
        steps, samples, loss_sum = steps + 1, samples + n, loss_sum + loss * n
        correct_sum = [a + b for a, b in zip(correct_sum, correct)]
        if on_batch is not None:
            on_batch(images, BatchStats(loss, correct, n, time.time() - tic, reader_cost))
        tic = time.time()
    out = {"loss": loss_sum / samples if samples else float("nan"), "samples": samples, "steps": steps}
    out.update({f"top{k}": c / samples if samples else float("nan") for k, c in zip(ks, correct_sum)})
    return out


class _Window:
    """Running sums between two console lines."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.n = self.loss = self.top1 = self.top5 = self.batch = self.reader = 0.0
        self.images = 0

    def add(self, loss, top1, top5, batch_cost, reader_cost, images):
        self.n += 1
        self.loss += loss
        self.top1 += top1
        self.top5 += top5
        self.batch += batch_cost
        self.reader += reader_cost
        self.images += images


def _normalize_params(cfg):
    """The mean/std (0-1 scale) of the training transforms' Normalize, to show the inputs."""
    for t in cfg["DataLoader"]["Train"]["transforms"]:
        if "Normalize" in t:
            kw = t["Normalize"]  # paddle.vision's own defaults where the config leaves them out
            mean, std = kw.get("mean", 0.0), kw.get("std", 1.0)
            mean = mean if isinstance(mean, (list, tuple)) else [mean] * 3
            std = std if isinstance(std, (list, tuple)) else [std] * 3
            if max(mean) > 1.0:  # given on the 0-255 scale
                mean, std = [m / 255.0 for m in mean], [s / 255.0 for s in std]
            return mean, std
    return [0.0] * 3, [1.0] * 3


def _image_strip(images, cfg, count=8):
    mean, std = _normalize_params(cfg)
    tiles = denormalize(images[:count].numpy(), mean, std)
    pad = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
    row = []
    for t in tiles:
        row += [t if t.shape[2] == 3 else np.repeat(t, 3, axis=2), pad]
    return np.concatenate(row[:-1], axis=1)


class Trainer:
    """One training run of a validated config (ppmobilenet.config.load_config): run() trains
    from the start or from Global.checkpoints to Global.epochs."""

    def __init__(self, cfg, log=None):
        self.cfg = cfg
        self.folder, self.vdl, self._next_loader = None, None, None
        try:
            self._join_processes(log)
            self._choose_seed()
            self._build_model()
            self._build_data()
            self._build_optimization()
            self._set_start_position()
            self._open_visualdl()
        except BaseException:
            self._release()
            raise

    # ---------------------------------------------------------------- building the run
    def _join_processes(self, log):
        """The device, this process's rank among the launched ones, and the run's logger."""
        g = self.cfg["Global"]
        self.device = resolve_device(g["device"])
        self.rank, self.world = dist.init(self.device)
        self.main = self.rank == 0
        self.out = g["output_dir"]
        self.folder = self._claim_output_dir()
        self.log = log or get_logger(self.out, self.rank)
        self.epochs = g["epochs"]
        if self.folder is not None and self.folder.stale_sets:
            self.log.info(f"Global.overwrite_output: this run replaces the one in {self.out}; its "
                          f"checkpoints ({', '.join(os.path.basename(p) for p in self.folder.stale_sets)}) "
                          "are removed when this run saves its first checkpoint")

    def _claim_output_dir(self):
        """Rank 0 locks Global.output_dir and checks that this run may train there (run_folder.py);
        every rank learns whether it could, so the job stops together."""
        g = self.cfg["Global"]
        folder, problem = None, None
        if self.main:
            try:
                folder = claim_output_dir(self.out, g["checkpoints"], g["overwrite_output"])
            except PPMobileNetError as e:
                problem = e
        failed = dist.all_reduce_sum([0.0 if problem is None else 1.0])[0] > 0
        if problem is not None:
            raise problem
        if failed:
            raise FolderInUse(f"rank 0 could not claim Global.output_dir={self.out} (its message says why)")
        return folder

    def _choose_seed(self):
        """Global.seed, else the resumed checkpoint's, else a fresh one (shared by every rank);
        the checkpoint's states are read first for that reason."""
        g = self.cfg["Global"]
        self.resume_states = None
        if g["checkpoints"]:
            self.resume_states = ckpt.read_states(g["checkpoints"])
        self.seed = self._pick_seed(g["seed"])
        if g["seed"] is None:
            self.cfg = _with_seed(self.cfg, self.seed)
        seed_everything(self.seed)

    def _build_model(self):
        """The network of Arch, the fast CPU paths, Global.pretrained_model."""
        g = self.cfg["Global"]
        self.model = build_model_from_arch(self.cfg["Arch"])
        self.class_num = self.cfg["Arch"]["class_num"]
        # the compiled CPU kernels, else the packed pure-Paddle path: same numbers, faster
        enable_for_training(self.model, self.device, compiled=g["cpu_kernels"],
                            packed=g["cpu_packed_depthwise"], log=self.log)
        if g["pretrained_model"]:
            rep = load_pretrained(self.model, g["pretrained_model"])
            self.log.info(f"pretrained: {rep['message']}")

    def _build_data(self):
        """The training set (built once, re-used by every epoch's loader) and the eval loader."""
        self.train_dataset = build_dataset(self.cfg, "Train")
        self.train_batches = len(self._train_loader(0))
        data_classes = getattr(self.train_dataset, "class_num", None)
        if data_classes is not None and int(data_classes) > self.class_num:
            raise ConfigError(f"Arch.class_num={self.class_num} but DataLoader.Train's data set "
                              f"has {data_classes} classes")
        if self.train_batches == 0:
            raise ConfigError("DataLoader.Train gives no batch (empty data set, or drop_last with "
                              "fewer samples than DataLoader.Train.sampler.batch_size)")
        self.eval_loader = None
        if self.cfg["Global"]["eval_during_train"]:
            self.eval_loader = build_dataloader(self.cfg, "Eval", rank=self.rank, world_size=self.world, epoch=0)

    def _build_optimization(self):
        """The lr schedule, AMP (GPU only), the optimizer, the losses, EMA and the top-k to report."""
        cfg = self.cfg
        self.scheduler = build_lr_scheduler(cfg["Optimizer"]["lr"], self.epochs, self.train_batches)
        amp = cfg["AMP"]
        self.use_amp = amp["use_amp"]
        if self.use_amp and self.device != "gpu":
            self.log.info("AMP.use_amp is set but the device is CPU: AMP is off, training in "
                          "float32 (paddle.amp needs a GPU)")
            self.use_amp = False
        self.amp_level = amp["level"]
        self.optimizer = build_optimizer(cfg["Optimizer"], self.model.parameters(), self.scheduler,
                                         multi_precision=self.use_amp and self.amp_level == "O2")
        self.scaler = None
        if self.use_amp:
            self.scaler = build_grad_scaler(amp)
            if self.amp_level == "O2":
                self.model, self.optimizer = paddle.amp.decorate(
                    models=self.model, optimizers=self.optimizer, level="O2", save_dtype="float32")
        self.loss_fn = build_loss(cfg["Loss"])
        self.eval_loss_fn = paddle.nn.CrossEntropyLoss()
        self.ema = ModelEMA(self.model, cfg["EMA"]["decay"]) if cfg["EMA"]["use_ema"] else None
        self.topk = effective_topk(cfg["Metric"]["topk"], self.class_num)

    def _set_start_position(self):
        """Epoch 0, or where Global.checkpoints left off; then the model as the ranks share it."""
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.best_metric, self.best_epoch, self.last_eval = None, None, None
        self._vdl_resume, self._last_save = None, None
        if self.resume_states is not None:
            self._vdl_resume = self._resume(self.cfg["Global"]["checkpoints"])
            self._last_save = f"{strip_suffix(self.cfg['Global']['checkpoints'])}, at step {self.global_step}"
        self.net = dist.wrap(self.model)

    def _open_visualdl(self):
        """The writer makes its record file at the first record (logger.py): a run that fails
        before its first step leaves none to hide the curves of the run before."""
        if self.main and self.cfg["Global"]["use_visualdl"]:
            self.vdl = VisualDLWriter(os.path.join(self.out, "vdl"), resume=self._vdl_resume)

    # ---------------------------------------------------------------- helpers
    def _train_loader(self, epoch, start_batch=0):
        return build_dataloader(self.cfg, "Train", rank=self.rank, world_size=self.world,
                                epoch=epoch, start_batch=start_batch,
                                dataset=self.train_dataset)

    def _pick_seed(self, seed):
        if seed is not None:
            return seed
        if self.resume_states and self.resume_states.get("seed") is not None:
            seed = int(self.resume_states["seed"])
            self.log.info(f"Global.seed is null: resuming with the checkpoint's seed {seed}")
            return seed
        seed = fresh_seed()
        if self.world > 1:  # every rank must shuffle alike: rank 0's draw wins
            t = paddle.to_tensor([seed], dtype="int64")
            paddle.distributed.broadcast(t, src=0)
            seed = int(t.item())
        self.log.info(f"Global.seed is null: this run uses seed {seed} "
                      f"(-o Global.seed={seed} repeats it)")
        return seed

    def _amp_ctx(self):
        return paddle.amp.auto_cast(enable=True, level=self.amp_level)

    def _resume(self, prefix):
        states = ckpt.load_checkpoint(prefix, self.model, self.optimizer, self.ema)
        stored_arch = states.get("arch")
        if stored_arch and any(self.cfg["Arch"].get(k) != v for k, v in stored_arch.items()):
            self.log.info(f"warning: checkpoint Arch {states['arch']} differs from the config's "
                          f"{self.cfg['Arch']}")
        self.epoch = int(states["epoch"])
        self.batch_in_epoch = int(states.get("batch_in_epoch", 0))
        self.global_step = int(states["global_step"])
        self.best_metric, self.best_epoch = states.get("best_metric"), states.get("best_epoch")
        self.last_eval = states.get("last_eval")
        # replay the schedule step by step: the same float operations as the uninterrupted run,
        # so lr matches it bit for bit; a changed Global.epochs or Optimizer.lr takes effect
        for _ in range(self.global_step):
            self.scheduler.step()
        stored = (states.get("lr_scheduler") or {}).get("last_lr")
        if stored is not None and abs(stored - self.scheduler.last_lr) > 1e-12 * max(1.0, stored):
            self.log.info(f"note: the lr schedule differs from the checkpoint's (lr {stored:.6g} "
                          f"there, {self.scheduler.last_lr:.6g} now): {self._schedule_change(states)}; "
                          "following the config")
        if self.scaler is not None and states.get("grad_scaler"):
            self.scaler.load_state_dict(states["grad_scaler"])
        if self.ema is not None:
            self.ema.updates = int(states.get("ema_updates", 0))
        set_rng_state(states.get("rng"))
        if states.get("world_size", self.world) != self.world:
            self.log.info(f"warning: the checkpoint was written by {states['world_size']} "
                          f"processes, this run has {self.world}: batches differ from the "
                          "interrupted run's")
        best = "none yet" if self.best_metric is None else \
            f"{self.best_metric:.4f} (epoch {self.best_epoch})"
        self.log.info(f"resumed from {strip_suffix(prefix)}: epoch {self.epoch}, batch "
                      f"{self.batch_in_epoch}, global step {self.global_step}, best top-1 {best}")
        return self._checked_vdl_position(states, prefix)

    def _checked_vdl_position(self, states, prefix):
        """The VisualDL record position of the .pdstates, whose file name the resume opens and
        cuts: it must name a record file inside this run's vdl folder."""
        problem = resume_problem(states.get("vdl"), os.path.join(self.out, "vdl"))
        if problem:
            raise ckpt.CheckpointError(f"Global.checkpoints={strip_suffix(prefix)}: "
                                       f"{strip_suffix(prefix)}.pdstates: {problem}; refusing it (a path "
                                       "read from a checkpoint must stay inside the run's folder)")
        return states.get("vdl")

    def _schedule_change(self, states):
        """What changed the lr schedule since the checkpoint: its steps per epoch first."""
        bs = self.cfg["DataLoader"]["Train"]["sampler"]["batch_size"]
        old_bs, old_steps = states.get("batch_size"), states.get("steps_per_epoch")
        steps = f"{old_steps} -> {self.train_batches} steps per epoch"
        if old_bs is not None and old_bs != bs:
            return f"DataLoader.Train.sampler.batch_size changed from {old_bs} to {bs} ({steps})"
        if states.get("world_size", self.world) != self.world:
            return f"the number of processes changed ({steps})"
        if old_steps is not None and old_steps != self.train_batches:
            return f"DataLoader.Train's data set changed ({steps})"
        if old_steps is None:  # a checkpoint of an older version records neither
            return "Global.epochs, Optimizer.lr or DataLoader.Train.sampler.batch_size changed"
        return "Global.epochs or Optimizer.lr changed"

    def _states(self):
        return {
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "last_eval": self.last_eval,
            "lr_scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "rng": rng_state(), "seed": self.seed, "world_size": self.world,
            "batch_size": self.cfg["DataLoader"]["Train"]["sampler"]["batch_size"],
            "steps_per_epoch": self.train_batches,
            "arch": dict(self.cfg["Arch"]),
            "vdl": self.vdl.position() if self.vdl is not None else None,
        }

    def _save(self, name):
        bad = first_non_finite(self.model)
        if bad is not None:  # a NaN before a ReLU leaves the loss finite (ReLU maps NaN to 0)
            kept = (f"the checkpoints saved before it are kept (the last: {self._last_save})"
                    if self._last_save else "no checkpoint was saved before it")
            raise TrainingError(
                f"epoch {self.epoch}, step {self.global_step}: {bad} holds nan or inf, so "
                f"{os.path.join(self.out, name)} was not saved and the run stopped; {kept}. A lower "
                "Optimizer.lr.learning_rate usually cures it; non-finite pretrained weights give it too")
        self._last_save = f"{os.path.join(self.out, name)}, at step {self.global_step}"
        if not self.main:
            return
        if self.folder is not None and self.folder.stale_sets:  # Global.overwrite_output
            removed = self.folder.remove_stale_sets()
            self.log.info(f"removed the replaced run's checkpoints: {', '.join(removed)}")
        prefix = os.path.join(self.out, name)
        ckpt.save_checkpoint(prefix, self.model, self.optimizer, self._states(), self.ema)
        return prefix

    def _scalar(self, tag, value):
        if self.vdl is not None:
            self.vdl.scalar(tag, value, self.global_step)

    # ---------------------------------------------------------------- the run
    def run(self):
        try:
            return self._run()
        finally:
            self._release()

    def _release(self):
        """Unfreeze the heap (see _run), close the VisualDL writer (its thread would keep a failed
        run's process alive) and give up the output folder."""
        gc.unfreeze()
        if self._next_loader is not None:  # a run that stopped between two epochs
            self._next_loader.close()
            self._next_loader = None
        if self.vdl is not None:
            try:
                self.vdl.close()
            except Exception:  # noqa: BLE001 -- a full disk must not hide the first error
                pass
            self.vdl = None
        if self.folder is not None:
            self.folder.release()
            self.folder = None

    def _run(self):
        log = self.log
        bs = self.cfg["DataLoader"]["Train"]["sampler"]["batch_size"]
        if self.main:
            write_resolved_config(self.cfg, self.out)
            write_labels(self.cfg, self.out, log, dataset=self.train_dataset)
        log.info(f"device {self.device}, {self.world} process(es); global batch "
                 f"{bs} x {self.world} = {bs * self.world}; {self.train_batches} steps/epoch; "
                 f"{self.epochs} epochs; CPU threads (OMP_NUM_THREADS) "
                 f"{os.environ.get('OMP_NUM_THREADS', 'unset (1)')}")
        if self.vdl is not None:
            log.info(f"VisualDL logs in {self.vdl.logdir}; watch them with: "
                     f"{visualdl_command(self.vdl.logdir)}")
        flush_logger(log)
        self._window = _Window()
        self._images_logged = self.global_step > 0
        self._steps_this_run = 0
        # The model, data sets and optimizer live for the whole run: frozen, they are no longer
        # walked by the collection each loader start runs before forking (data/loader.py), 80 ms
        # a start on the demo. _release unfreezes them.
        gc.freeze()
        t_start = time.time()
        while self.epoch < self.epochs:
            epoch = self.epoch
            loader, self._next_loader = self._next_loader or self._train_loader(epoch, self.batch_in_epoch), None
            try:
                train_one_epoch(self.net, loader, self.loss_fn, self.optimizer, self.scheduler, self.topk,
                                scaler=self.scaler, amp_level=self.amp_level, ema=self.ema,
                                on_batch=functools.partial(self._after_batch, loader, epoch))
            except NonFiniteLoss as e:
                raise self._non_finite(e, epoch) from None
            self.batch_in_epoch = loader.next_batch
            if self.batch_in_epoch != self.train_batches:
                raise RuntimeError(f"epoch {epoch + 1}: the data loader gave "
                                   f"{self.batch_in_epoch} of {self.train_batches} batches")
            if epoch + 1 < self.epochs:
                # the next epoch's workers start now and fill their queues during this epoch's
                # evaluation and saves: otherwise its first batch waits for them (~0.1 s an epoch)
                self._next_loader = self._train_loader(epoch + 1).start()
            self._end_of_epoch(loader, epoch)
        self._latest_of_a_finished_resume()
        if self.world > 1:  # same digest on every rank = the ranks hold the same weights
            log.info(f"weights digest (rank {self.rank}): {dist.weights_digest(self.model)}")
        dist.barrier()
        elapsed = time.time() - t_start
        vdl_dir = self.vdl.logdir if self.vdl is not None else None
        if self.vdl is not None:
            self.vdl.close()
            self.vdl = None
        if self.main:
            best = "none" if self.best_metric is None else \
                f"{self.best_metric:.4f} at epoch {self.best_epoch}"
            log.info(f"done in {datetime.timedelta(seconds=int(elapsed))} ({self._steps_this_run} "
                     f"steps this run); best eval top-1 {best}")
            sets = sorted((os.path.basename(p)[:-len(".pdparams")]
                           for p in glob.glob(os.path.join(glob.escape(self.out), "*.pdparams"))),
                          key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
            log.info(f"checkpoints in {self.out}: {', '.join(sets) or 'none'} "
                     f"(.pdparams/.pdopt/.pdstates); log: {os.path.join(self.out, 'train.log')}")
            if vdl_dir:
                log.info(f"VisualDL: {visualdl_command(vdl_dir)}")
        flush_logger(log)
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "last_eval": self.last_eval, "global_step": self.global_step}

    def _latest_of_a_finished_resume(self):
        """A run resumed from a set already at the last step trains nothing; `latest` must still
        be the newest state (a kill between an epoch's epoch_N and latest saves leaves it behind)."""
        resumed = self.cfg["Global"]["checkpoints"]
        latest = os.path.join(self.out, "latest")
        if self._steps_this_run or not resumed or \
                os.path.abspath(strip_suffix(resumed)) == os.path.abspath(latest):
            return
        if self._save("latest"):
            self.log.info(f"{strip_suffix(resumed)} is already at the last step: saved it as "
                          f"{latest} (epoch {self.epoch}, step {self.global_step})")

    def _non_finite(self, e, epoch):
        step = self.global_step + 1      # _after_batch never ran for the bad step
        kept = (f"the checkpoints saved before it are kept (the last: {self._last_save})"
                if self._last_save else "no checkpoint was saved before it")
        return TrainingError(
            f"epoch {epoch + 1}, step {step} (batch {self.batch_in_epoch + 1} of {self.train_batches}): the "
            f"training loss is {e.loss}" + (f" ({e.amp_note})" if e.amp_note else "") +
            f"; the run stopped there and saved nothing after it; {kept}. "
            "A lower Optimizer.lr.learning_rate (or a longer Optimizer.lr.warmup_epoch) usually cures "
            "it; a bad image gives it too")

    def _after_batch(self, loader, epoch, images, stats):
        """train_one_epoch's on_batch: the position, the console line, VisualDL, save_steps."""
        if not self._images_logged and self.vdl is not None:
            # a fresh run's first records, written once it has really started (see _open_visualdl)
            self._write_hparams(self.cfg["DataLoader"]["Train"]["sampler"]["batch_size"])
            self.vdl.image("train/inputs", _image_strip(images, self.cfg), 0)
            self._images_logged = True
        self.batch_in_epoch = loader.next_batch
        self.global_step += 1
        self._steps_this_run += 1
        c, n = stats.correct, stats.samples
        top5 = c[1] / n if len(c) > 1 else c[0] / n
        self._window.add(stats.loss, c[0] / n, top5, stats.batch_cost, stats.reader_cost, n * self.world)
        last = self.batch_in_epoch == self.train_batches
        g = self.cfg["Global"]
        if self.global_step % g["print_batch_step"] == 0 or last:
            self._log_window(self._window, epoch, self.epochs * self.train_batches)
            self._window.reset()
        if g["save_steps"] and self.global_step % g["save_steps"] == 0 and not last:
            dist.sync_buffers(self.model)  # every rank: the resumed ranks all start alike
            if self._save("latest"):
                self.log.info(f"saved {os.path.join(self.out, 'latest')} inside epoch "
                              f"{epoch + 1} (batch {self.batch_in_epoch}, step {self.global_step})")

    def _log_window(self, w, epoch, total_steps):
        lr = self.optimizer.get_lr()
        avg_batch = w.batch / w.n
        ips = w.images / w.batch if w.batch > 0 else 0.0
        eta = datetime.timedelta(seconds=int(avg_batch * (total_steps - self.global_step)))
        k5 = self.topk[1] if len(self.topk) > 1 else self.topk[0]
        self.log.info(
            f"epoch [{epoch + 1}/{self.epochs}] iter [{self.batch_in_epoch}/{self.train_batches}] "
            f"loss {w.loss / w.n:.5f} top1 {w.top1 / w.n:.4f} top{k5} {w.top5 / w.n:.4f} "
            f"lr {lr:.6f} batch_cost {avg_batch:.4f}s reader_cost {w.reader / w.n:.4f}s "
            f"ips {ips:.1f} img/s eta {eta}")
        self._scalar("train/loss", w.loss / w.n)
        self._scalar("train/top1", w.top1 / w.n)
        self._scalar(f"train/top{k5}", w.top5 / w.n)
        self._scalar("train/lr", lr)
        self._scalar("train/ips", ips)

    def _evaluate(self):
        return evaluate_model(self.net, self.eval_loader, self.eval_loss_fn, self.topk, self.class_num,
                              self._amp_ctx if self.use_amp else None)

    def _end_of_epoch(self, loader, epoch):
        log = self.log
        bad = pop_bad_samples(loader)  # listed by the data logger above, into train.log too
        if bad:
            log.info(f"epoch {epoch + 1}: {len(bad)} bad sample(s) skipped on this rank "
                     "(DataLoader.Train.dataset.skip_bad_samples)")
        dist.sync_buffers(self.model)
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        n = self.epoch
        is_best = False
        if self.eval_loader is not None and (n % self.cfg["Global"]["eval_interval"] == 0 or n == self.epochs):
            m = self._evaluate()
            self.last_eval = {k: v for k, v in m.items() if k != "topk"}
            tail = " ".join(f"top{k} {m[f'top{k}']:.4f}" for k in m["topk"])
            line = f"eval epoch [{n}/{self.epochs}] loss {m['loss']:.5f} {tail} ({m['samples']} images)"
            for k in ["loss"] + [f"top{k}" for k in m["topk"]]:
                self._scalar(f"eval/{k}", m[k])
            if self.ema is not None:
                with self.ema.applied(self.model):
                    e = self._evaluate()
                line += f"; EMA top1 {e['top1']:.4f}"
                for k in ["loss"] + [f"top{k}" for k in e["topk"]]:
                    self._scalar(f"eval_ema/{k}", e[k])
                self.last_eval["ema_top1"] = e["top1"]
            if self.best_metric is None or m["top1"] > self.best_metric:
                self.best_metric, self.best_epoch, is_best = m["top1"], n, True
            log.info(line + f"; best top1 {self.best_metric:.4f} (epoch {self.best_epoch})")
        if is_best:
            self._save("best_model")
        if n % self.cfg["Global"]["save_interval"] == 0:
            self._save(f"epoch_{n}")
        self._save("latest")
        if self.main:
            log.info(f"saved {os.path.join(self.out, 'latest')} (epoch {n}, step "
                     f"{self.global_step})" + (", new best_model" if is_best else ""))
        flush_logger(log)

    def _write_hparams(self, bs):
        c = self.cfg
        lr = c["Optimizer"]["lr"]
        params = {
            "arch": c["Arch"]["name"], "scale": c["Arch"]["scale"],
            "head": c["Arch"]["head"], "class_num": self.class_num,
            "epochs": self.epochs, "global_batch": bs * self.world,
            "lr": lr["learning_rate"], "lr_schedule": lr["name"],
            "warmup_epoch": float(lr["warmup_epoch"]),
            "momentum": c["Optimizer"]["momentum"],
            "l2": c["Optimizer"]["regularizer"]["coeff"],
            "label_smoothing": c["Loss"]["epsilon"],
            "ema": int(bool(self.ema)), "amp": self.amp_level if self.use_amp else "off",
            "seed": self.seed,
        }
        self.vdl.hparams(params, ["eval/top1", "eval/loss"])


def _with_seed(cfg, seed):
    out = dict(cfg)
    out["Global"] = dict(cfg["Global"], seed=seed)
    return out
