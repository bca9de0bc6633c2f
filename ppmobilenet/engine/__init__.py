"""Training engine: the train loop (trainer), evaluation metrics, the train and eval commands,
checkpoints of a training run, optimizer + lr, EMA, logging (console + VisualDL), the process
set-up (runtime: device, seed, RNG states) and the distributed helpers."""
from .commands import evaluate, train
from .trainer import Trainer, train_one_epoch

__all__ = ["train", "evaluate", "Trainer", "train_one_epoch"]
