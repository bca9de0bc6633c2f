"""Training engine: the train loop, evaluation, checkpoints, optimizer + lr, EMA, logging
(console + VisualDL) and the distributed helpers.

Names are imported on first use: `ppmobilenet.cpu` must run before paddle is imported,
and `ppmobilenet.engine.checkpoint` (used by deploy) should not pull in the data pipeline.
"""
import importlib

_LAZY = {"train": "trainer", "Trainer": "trainer", "evaluate": "evaluation",
         "evaluate_model": "evaluation", "load_pretrained": "checkpoint",
         "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
         "CheckpointError": "checkpoint"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
