"""Optimizer section -> paddle.optimizer.Momentum with L2 decay and a per-step lr schedule.

Schedules are stepped once per iteration, so warmup is a smooth per-step ramp and the decay
points land on the configured epochs whatever the warmup length is.
"""
import paddle
from paddle.optimizer import lr as lr_mod

from ..config import ConfigError


def build_lr_scheduler(lr_cfg, epochs, steps_per_epoch):
    """Optimizer.lr -> an LRScheduler stepped every iteration."""
    name = lr_cfg.get("name", "Cosine")
    total = int(epochs * steps_per_epoch)
    warmup = int(round(lr_cfg.get("warmup_epoch", 0) * steps_per_epoch))
    if warmup >= total and total > 0:
        raise ConfigError(f"Optimizer.lr.warmup_epoch={lr_cfg.get('warmup_epoch')} covers the "
                          f"whole run (Global.epochs={epochs})")
    if name == "Cosine":
        base = float(lr_cfg["learning_rate"])
        sched = lr_mod.CosineAnnealingDecay(base, T_max=max(1, total - warmup))
    elif name == "Piecewise":
        decay = list(lr_cfg.get("decay_epochs") or [])
        values = lr_cfg.get("values")
        if not values:
            base = float(lr_cfg["learning_rate"])
            values = [base * 0.1 ** i for i in range(len(decay) + 1)]
        if len(values) != len(decay) + 1:
            raise ConfigError(f"Optimizer.lr.values has {len(values)} entries; Piecewise needs "
                              f"len(Optimizer.lr.decay_epochs) + 1 = {len(decay) + 1}")
        if list(decay) != sorted(decay):
            raise ConfigError(f"Optimizer.lr.decay_epochs must increase, got {decay}")
        base = float(values[0])
        # LinearWarmup hands the inner schedule (step - warmup): shift the boundaries back so
        # the drops happen at the configured epochs.
        bounds = [max(0, int(e * steps_per_epoch) - warmup) for e in decay]
        sched = lr_mod.PiecewiseDecay(bounds, [float(v) for v in values])
    else:
        raise ConfigError(f"Optimizer.lr.name={name!r}: choose Cosine or Piecewise")
    if warmup > 0:
        sched = lr_mod.LinearWarmup(sched, warmup_steps=warmup,
                                    start_lr=float(lr_cfg.get("warmup_start_lr", 0.0)),
                                    end_lr=base)
    return sched


def build_optimizer(opt_cfg, parameters, scheduler, multi_precision=False):
    name = opt_cfg.get("name", "Momentum")
    if name != "Momentum":
        raise ConfigError(f"Optimizer.name={name!r}: only Momentum is supported")
    reg = opt_cfg.get("regularizer") or {}
    decay = None
    if reg:
        if reg.get("name", "L2") != "L2":
            raise ConfigError(f"Optimizer.regularizer.name={reg.get('name')!r}: only L2")
        coeff = float(reg.get("coeff", 0.0))
        decay = paddle.regularizer.L2Decay(coeff) if coeff > 0 else None
    return paddle.optimizer.Momentum(learning_rate=scheduler,
                                     momentum=float(opt_cfg.get("momentum", 0.9)),
                                     parameters=parameters, weight_decay=decay,
                                     multi_precision=multi_precision)


def current_lr(optimizer):
    return float(optimizer.get_lr())
