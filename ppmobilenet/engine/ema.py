"""Exponential moving average of the weights (EMA.use_ema), evaluated and saved as .pdema.

decay_t = min(decay, (1 + t) / (10 + t)) after t updates: the average follows the weights
closely early on, so short runs get a useful EMA too, and settles at `decay` later.
BatchNorm running statistics are averaged like the weights.
"""
import contextlib

import paddle


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.astype("float32").detach().clone()
                       for k, v in model.state_dict().items() if _is_float(v)}

    @paddle.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                s = self.shadow[k]
                s.set_value(s * d + v.astype("float32") * (1.0 - d))

    def state_dict(self):
        return dict(self.shadow)

    def set_state_dict(self, state):
        for k, v in state.items():
            if k in self.shadow:
                self.shadow[k].set_value(paddle.to_tensor(v).astype("float32")
                                         if not isinstance(v, paddle.Tensor) else v.astype("float32"))

    @contextlib.contextmanager
    def applied(self, model):
        """Run the body with the EMA weights in `model`, then put the trained weights back."""
        own = model.state_dict()
        backup = {k: own[k].clone() for k in self.shadow}
        model.set_state_dict({k: v.astype(own[k].dtype) for k, v in self.shadow.items()})
        try:
            yield model
        finally:
            model.set_state_dict(backup)


def _is_float(t):
    return t.dtype in (paddle.float32, paddle.float16, paddle.bfloat16, paddle.float64)
