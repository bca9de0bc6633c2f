"""The training loop: config -> model + data -> steps, evaluation, checkpoints, logs.

Resume is exact: the .pdstates file carries the epoch and batch position, the global step,
the best metric and its epoch, the lr scheduler, the loss scaler, the RNG states and where the
VisualDL record file ended; batches are a pure function of (seed, epoch, index), so a resumed run
sees the very batches the interrupted one would have seen.
"""
import datetime
import glob
import hashlib
import os
import random
import re
import time

import numpy as np
import paddle

from ..config import ConfigError
from ..data import build_dataloader, build_dataset, pop_bad_samples
from ..models import build_model_from_arch
from ..models.packed_depthwise import MAX_PLANE as PACKED_MAX_PLANE, use_packed_depthwise
from . import checkpoint as ckpt
from . import dist
from .ema import ModelEMA
from .evaluation import effective_topk, evaluate_model, topk_correct
from .logger import VisualDLWriter, denormalize, flush_logger, get_logger, visualdl_command
from .optim import build_lr_scheduler, build_optimizer
from .outputs import write_labels, write_resolved_config

# the VisualDL scalar tags a run writes (eval_ema/* too when EMA.use_ema)
SCALAR_TAGS = ("train/loss", "train/top1", "train/top5", "train/lr", "train/ips",
               "eval/loss", "eval/top1", "eval/top5")


def resolve_device(name):
    """Global.device auto|cpu|gpu -> the paddle device string."""
    name = (name or "auto").lower()
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "auto":
        return "gpu" if has_gpu else "cpu"
    if name == "gpu" and not has_gpu:
        raise ConfigError("Global.device=gpu but this Paddle has no usable GPU "
                          f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use cpu or auto")
    if name not in ("cpu", "gpu"):
        raise ConfigError(f"Global.device={name!r}: choose auto, cpu or gpu")
    return name


def seed_everything(seed):
    paddle.seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


def rng_state():
    # numpy's key array as a list: paddle.load turns numpy arrays into tensors, and uint32
    # tensors do not exist
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"paddle": paddle.get_rng_state(),
            "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}


def set_rng_state(state):
    if not state:
        return
    paddle.set_rng_state(state["paddle"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(tuple(_tuples(state["python"])))


def _tuples(x):
    """random.getstate() after a save/load round trip may come back with lists for tuples."""
    return tuple(_tuples(i) for i in x) if isinstance(x, (list, tuple)) else x


def build_loss(loss_cfg):
    name = (loss_cfg or {}).get("name", "CELoss")
    if name != "CELoss":
        raise ConfigError(f"Loss.name={name!r}: only CELoss is supported")
    eps = float((loss_cfg or {}).get("epsilon", 0.0) or 0.0)
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"Loss.epsilon={eps}: label smoothing must be in [0, 1)")
    return paddle.nn.CrossEntropyLoss(label_smoothing=eps)


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
    for t in cfg["DataLoader"]["Train"].get("transforms") or []:
        if isinstance(t, dict) and "Normalize" in t:
            kw = t["Normalize"] or {}
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
    def __init__(self, cfg, log=None):
        self.cfg = cfg
        g = cfg["Global"]
        self.device = resolve_device(g.get("device"))
        self.rank, self.world = dist.init(self.device)
        self.main = self.rank == 0
        self.out = g["output_dir"]
        self.log = log or get_logger(self.out, self.rank)
        self.resume_states = None
        if g.get("checkpoints"):  # read first: a run with Global.seed null keeps its seed
            self._warn_untrusted(ckpt.strip_suffix(g["checkpoints"]) + ".pdparams",
                                 "Global.checkpoints")
            self.resume_states = ckpt.read_states(g["checkpoints"])
        self.seed = self._pick_seed(g.get("seed"))
        if g.get("seed") is None:
            cfg = self.cfg = _with_seed(cfg, self.seed)
            g = cfg["Global"]
        seed_everything(self.seed)
        self.epochs = int(g["epochs"])
        self.print_step = max(1, int(g.get("print_batch_step") or 10))
        self.save_interval = int(g.get("save_interval") or 0)
        self.eval_interval = max(1, int(g.get("eval_interval") or 1))
        self.save_steps = int(g.get("save_steps") or 0)

        self.model = build_model_from_arch(cfg["Arch"])
        if self.device == "cpu" and g.get("cpu_packed_depthwise", True):
            n = use_packed_depthwise(self.model)  # same numbers, faster small planes on CPU
            self.log.info(f"{n} depthwise convs take the packed CPU path on planes <= "
                          f"{PACKED_MAX_PLANE} pixels (Global.cpu_packed_depthwise)")
        self.class_num = int(cfg["Arch"]["class_num"])
        if g.get("pretrained_model"):
            self._warn_untrusted(g["pretrained_model"], "Global.pretrained_model")
            rep = ckpt.load_pretrained(self.model, g["pretrained_model"])
            self.log.info(f"pretrained: {rep['message']}")

        self.train_dataset = build_dataset(cfg, "Train")
        self.train_batches = len(self._train_loader(0))
        data_classes = getattr(self.train_dataset, "class_num", None)
        if data_classes is not None and int(data_classes) > self.class_num:
            raise ConfigError(f"Arch.class_num={self.class_num} but DataLoader.Train's data set "
                              f"has {data_classes} classes")
        if self.train_batches == 0:
            raise ConfigError("DataLoader.Train gives no batch (empty data set, or drop_last with "
                              "fewer samples than DataLoader.Train.sampler.batch_size)")
        self.eval_loader = None
        if g.get("eval_during_train", True) and cfg["DataLoader"].get("Eval"):
            self.eval_loader = build_dataloader(cfg, "Eval", rank=self.rank,
                                                world_size=self.world, epoch=0)

        self.scheduler = build_lr_scheduler(cfg["Optimizer"]["lr"], self.epochs,
                                            self.train_batches)
        amp = cfg.get("AMP") or {}
        self.use_amp = bool(amp.get("use_amp"))
        if self.use_amp and self.device != "gpu":
            self.log.info("AMP.use_amp is set but the device is CPU: AMP is off, training in "
                          "float32 (paddle.amp needs a GPU)")
            self.use_amp = False
        self.amp_level = amp.get("level", "O1")
        self.optimizer = build_optimizer(cfg["Optimizer"], self.model.parameters(),
                                         self.scheduler,
                                         multi_precision=self.use_amp and self.amp_level == "O2")
        self.scaler = None
        if self.use_amp:
            self.scaler = paddle.amp.GradScaler(
                init_loss_scaling=float(amp.get("scale_loss", 1024.0)),
                use_dynamic_loss_scaling=bool(amp.get("use_dynamic_loss_scaling", True)))
            if self.amp_level == "O2":
                self.model, self.optimizer = paddle.amp.decorate(
                    models=self.model, optimizers=self.optimizer, level="O2",
                    save_dtype="float32")
        self.loss_fn = build_loss(cfg.get("Loss"))
        self.eval_loss_fn = paddle.nn.CrossEntropyLoss()
        ema_cfg = cfg.get("EMA") or {}
        self.ema = ModelEMA(self.model, ema_cfg.get("decay", 0.9999)) \
            if ema_cfg.get("use_ema") else None
        self.topk = effective_topk((cfg.get("Metric") or {}).get("topk", [1, 5]), self.class_num)

        # training position; overwritten by a resume
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.best_metric, self.best_epoch, self.last_eval = None, None, None
        vdl_resume = None
        if self.resume_states is not None:
            vdl_resume = self._resume(g["checkpoints"])
        self.net = dist.wrap(self.model)
        self.vdl = None
        if self.main and g.get("use_visualdl", True):
            self.vdl = VisualDLWriter(os.path.join(self.out, "vdl"), resume=vdl_resume)

    # ---------------------------------------------------------------- helpers
    def _train_loader(self, epoch, start_batch=0):
        return build_dataloader(self.cfg, "Train", rank=self.rank, world_size=self.world,
                                epoch=epoch, start_batch=start_batch,
                                dataset=self.train_dataset)

    def _warn_untrusted(self, path, key):
        """One line before a pickle from outside this run's output directory is opened."""
        if not self.main:
            return
        from .safe_weights import untrusted_pickle_note
        msg = untrusted_pickle_note(path, self.out, key=key)
        if msg:
            self.log.info(msg)

    def _pick_seed(self, seed):
        if seed is not None:
            return int(seed)
        if self.resume_states and self.resume_states.get("seed") is not None:
            seed = int(self.resume_states["seed"])
            self.log.info(f"Global.seed is null: resuming with the checkpoint's seed {seed}")
            return seed
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
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
        if states.get("arch") and states["arch"] != self.cfg["Arch"]:
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
                          f"there, {self.scheduler.last_lr:.6g} now): Global.epochs or "
                          "Optimizer.lr changed; following the config")
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
        self.log.info(f"resumed from {ckpt.strip_suffix(prefix)}: epoch {self.epoch}, batch "
                      f"{self.batch_in_epoch}, global step {self.global_step}, best top-1 {best}")
        return states.get("vdl")

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
            "arch": dict(self.cfg["Arch"]),
            "vdl": self.vdl.position() if self.vdl is not None else None,
        }

    def _save(self, name):
        if not self.main:
            return
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
            # VisualDL's writer thread would keep a failed run's process alive
            if self.vdl is not None:
                try:
                    self.vdl.close()
                except Exception:  # noqa: BLE001 -- a full disk must not hide the first error
                    pass
                self.vdl = None

    def _run(self):
        log, g = self.log, self.cfg["Global"]
        bs = int(self.cfg["DataLoader"]["Train"]["sampler"]["batch_size"])
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
            if self.global_step == 0:
                self._write_hparams(bs)
        flush_logger(log)
        total_steps = self.epochs * self.train_batches
        window = _Window()
        first_images_logged = self.global_step > 0
        t_start = time.time()
        steps_this_run = 0
        while self.epoch < self.epochs:
            epoch = self.epoch
            loader = self._train_loader(epoch, self.batch_in_epoch)
            self.net.train()
            tic = time.time()
            for images, labels in loader:
                reader_cost = time.time() - tic
                labels = labels.reshape([-1]).astype("int64")
                if not first_images_logged and self.vdl is not None:
                    self.vdl.image("train/inputs", _image_strip(images, self.cfg), 0)
                    first_images_logged = True
                loss, logits = self._step(images, labels)
                self.batch_in_epoch = loader.next_batch
                self.global_step += 1
                steps_this_run += 1
                c = topk_correct(logits.astype("float32"), labels, self.topk[:2])
                n = labels.shape[0]
                top5 = c[1] / n if len(c) > 1 else c[0] / n
                window.add(loss, c[0] / n, top5, time.time() - tic, reader_cost, n * self.world)
                last = self.batch_in_epoch == self.train_batches
                if self.global_step % self.print_step == 0 or last:
                    self._log_window(window, epoch, total_steps)
                    window.reset()
                if self.save_steps and self.global_step % self.save_steps == 0 and not last:
                    dist.sync_buffers(self.model)  # every rank: the resumed ranks all start alike
                    if self._save("latest"):
                        log.info(f"saved {os.path.join(self.out, 'latest')} inside epoch "
                                 f"{epoch + 1} (batch {self.batch_in_epoch}, step "
                                 f"{self.global_step})")
                tic = time.time()
            self.batch_in_epoch = loader.next_batch
            if self.batch_in_epoch != self.train_batches:
                raise RuntimeError(f"epoch {epoch + 1}: the data loader gave "
                                   f"{self.batch_in_epoch} of {self.train_batches} batches")
            self._end_of_epoch(loader, epoch)
        if self.world > 1:  # same digest on every rank = the ranks hold the same weights
            log.info(f"weights digest (rank {self.rank}): {weights_digest(self.model)}")
        dist.barrier()
        elapsed = time.time() - t_start
        vdl_dir = self.vdl.logdir if self.vdl is not None else None
        if self.vdl is not None:
            self.vdl.close()
            self.vdl = None
        if self.main:
            best = "none" if self.best_metric is None else \
                f"{self.best_metric:.4f} at epoch {self.best_epoch}"
            log.info(f"done in {datetime.timedelta(seconds=int(elapsed))} ({steps_this_run} "
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

    def _step(self, images, labels):
        if self.use_amp:
            with self._amp_ctx():
                logits = self.net(images)
                loss = self.loss_fn(logits.astype("float32"), labels)
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            logits = self.net(images)
            loss = self.loss_fn(logits, labels)
            loss.backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.item(), logits.detach()

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
        if self.eval_loader is not None and (n % self.eval_interval == 0 or n == self.epochs):
            m = evaluate_model(self.net, self.eval_loader, self.eval_loss_fn, self.topk,
                         self.class_num, self._amp_ctx if self.use_amp else None)
            self.last_eval = {k: v for k, v in m.items() if k != "topk"}
            tail = " ".join(f"top{k} {m[f'top{k}']:.4f}" for k in m["topk"])
            line = f"eval epoch [{n}/{self.epochs}] loss {m['loss']:.5f} {tail} ({m['samples']} images)"
            for k in ["loss"] + [f"top{k}" for k in m["topk"]]:
                self._scalar(f"eval/{k}", m[k])
            if self.ema is not None:
                with self.ema.applied(self.model):
                    e = evaluate_model(self.net, self.eval_loader, self.eval_loss_fn, self.topk,
                                 self.class_num, self._amp_ctx if self.use_amp else None)
                line += f"; EMA top1 {e['top1']:.4f}"
                for k in ["loss"] + [f"top{k}" for k in e["topk"]]:
                    self._scalar(f"eval_ema/{k}", e[k])
                self.last_eval["ema_top1"] = e["top1"]
            if self.best_metric is None or m["top1"] > self.best_metric:
                self.best_metric, self.best_epoch, is_best = m["top1"], n, True
            log.info(line + f"; best top1 {self.best_metric:.4f} (epoch {self.best_epoch})")
        if is_best:
            self._save("best_model")
        if self.save_interval and n % self.save_interval == 0:
            self._save(f"epoch_{n}")
        self._save("latest")
        if self.main:
            log.info(f"saved {os.path.join(self.out, 'latest')} (epoch {n}, step "
                     f"{self.global_step})" + (", new best_model" if is_best else ""))
        flush_logger(log)

    def _write_hparams(self, bs):
        c = self.cfg
        lr = c["Optimizer"]["lr"]
        reg = c["Optimizer"].get("regularizer") or {}
        params = {
            "arch": c["Arch"]["name"], "scale": float(c["Arch"].get("scale", 1.0)),
            "head": str(c["Arch"].get("head", "")), "class_num": self.class_num,
            "epochs": self.epochs, "global_batch": bs * self.world,
            "lr": float(lr.get("learning_rate", 0.0)), "lr_schedule": lr.get("name", ""),
            "warmup_epoch": float(lr.get("warmup_epoch", 0) or 0),
            "momentum": float(c["Optimizer"].get("momentum", 0.9)),
            "l2": float(reg.get("coeff", 0.0) or 0.0),
            "label_smoothing": float((c.get("Loss") or {}).get("epsilon", 0.0) or 0.0),
            "ema": int(bool(self.ema)), "amp": self.amp_level if self.use_amp else "off",
            "seed": self.seed,
        }
        self.vdl.hparams(params, ["eval/top1", "eval/loss"])


def weights_digest(model):
    """SHA-1 over every tensor of the state dict, in key order."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]


def _with_seed(cfg, seed):
    out = dict(cfg)
    out["Global"] = dict(cfg["Global"], seed=seed)
    return out


def train(cfg, log=None):
    """Train from a loaded config (ppmobilenet.config.load_config). Returns a summary dict."""
    return Trainer(cfg, log).run()
