"""Optimizer section -> paddle.optimizer.Momentum with L2 decay and a per-step lr schedule.

Schedules are stepped once per iteration, so warmup is a smooth per-step ramp and the decay
points land on the configured epochs whatever the warmup length is. The sections come validated
from ppmobilenet.config (Momentum, L2, Cosine | Piecewise with matching values, warmup shorter
than the run).
"""
import paddle
from paddle.optimizer import lr as lr_mod


def build_lr_scheduler(lr_cfg, epochs, steps_per_epoch):
    """Optimizer.lr -> an LRScheduler stepped every iteration."""
    total = int(epochs * steps_per_epoch)
    warmup = int(round(lr_cfg["warmup_epoch"] * steps_per_epoch))
    if lr_cfg["name"] == "Cosine":
        base = float(lr_cfg["learning_rate"])
        sched = lr_mod.CosineAnnealingDecay(base, T_max=max(1, total - warmup))
    else:  # Piecewise
        base = float(lr_cfg["values"][0])
        # LinearWarmup hands the inner schedule (step - warmup): shift the boundaries back so
        # the drops happen at the configured epochs.
        bounds = [max(0, int(e * steps_per_epoch) - warmup) for e in lr_cfg["decay_epochs"]]
        sched = lr_mod.PiecewiseDecay(bounds, [float(v) for v in lr_cfg["values"]])
    if warmup > 0:
        sched = lr_mod.LinearWarmup(sched, warmup_steps=warmup, start_lr=float(lr_cfg["warmup_start_lr"]),
                                    end_lr=base)
    return sched


def build_optimizer(opt_cfg, parameters, scheduler, multi_precision=False):
    """Optimizer -> Momentum over `parameters`, L2 weight decay unless its coeff is 0."""
    coeff = opt_cfg["regularizer"]["coeff"]
    return paddle.optimizer.Momentum(learning_rate=scheduler, momentum=opt_cfg["momentum"],
                                     parameters=parameters,
                                     weight_decay=paddle.regularizer.L2Decay(coeff) if coeff > 0 else None,
                                     multi_precision=multi_precision)


class GradScaler(paddle.amp.GradScaler):
    """paddle.amp.GradScaler whose dynamic scale can go down under numpy >= 2.4: Paddle 3.3.1
    prints float() of its one-item scale tensor when it halves the scale, which numpy 2.4
    refuses ("only 0-dimensional arrays can be converted"). The update runs on a 0-d view."""

    def _update(self):
        shape = self._scale.shape
        self._scale = self._scale.reshape([])
        try:
            super()._update()
        finally:
            self._scale = self._scale.reshape(shape)


def build_grad_scaler(amp_cfg):
    """AMP -> the loss scaler (GPU runs only)."""
    return GradScaler(init_loss_scaling=amp_cfg["scale_loss"],
                      use_dynamic_loss_scaling=amp_cfg["use_dynamic_loss_scaling"])
