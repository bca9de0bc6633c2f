"""What tools/train.py and tools/eval.py run, on a validated config (ppmobilenet.config.load_config)."""
import paddle

from ..config import ConfigError
from ..data import build_dataloader
from ..models import build_model_from_arch
from ..weights import load_pretrained, strip_suffix
from . import dist
from .evaluation import evaluate_model
from .logger import get_logger
from .runtime import resolve_device
from .trainer import Trainer


def train(cfg, log=None):
    """Train from the start or from Global.checkpoints. -> {best_metric, best_epoch, last_eval,
    global_step}."""
    return Trainer(cfg, log).run()


def evaluate(cfg, log=None):
    """Build the model from Arch, load Global.pretrained_model (or the weights of
    Global.checkpoints), run DataLoader.Eval and return the metrics dict."""
    g = cfg["Global"]
    rank, world = dist.init(resolve_device(g["device"]))
    log = log or get_logger(None, rank)
    model = build_model_from_arch(cfg["Arch"])
    weights = g["pretrained_model"] or g["checkpoints"]
    if not weights:
        raise ConfigError("Global.pretrained_model is not set: pass the weights to evaluate, "
                          "e.g. -o Global.pretrained_model=output/demo/best_model")
    if g["pretrained_model"]:
        rep = load_pretrained(model, weights, skip_classifier_on_mismatch=False)
    else:
        rep = load_pretrained(model, strip_suffix(weights) + ".pdparams", skip_classifier_on_mismatch=False,
                              key="Global.checkpoints")
    log.info(rep["message"])
    loader = build_dataloader(cfg, "Eval", rank=rank, world_size=world, epoch=0)
    m = evaluate_model(dist.wrap(model), loader, paddle.nn.CrossEntropyLoss(), cfg["Metric"]["topk"],
                       cfg["Arch"]["class_num"])
    tail = " ".join(f"top{k} {m[f'top{k}']:.4f}" for k in m["topk"])
    log.info(f"eval: loss {m['loss']:.5f} {tail} ({m['samples']} images)")
    return m
