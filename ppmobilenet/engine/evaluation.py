"""Top-k accuracy and loss over a data loader (summed over ranks when there are several)."""
import paddle

from . import dist


def effective_topk(topk, class_num):
    """Metric.topk capped at the class count (top-5 of a 3-class task is top-3), deduplicated."""
    ks = []
    for k in topk or [1]:
        k = max(1, min(int(k), int(class_num)))
        if k not in ks:
            ks.append(k)
    return ks


def topk_correct(logits, labels, ks):
    """Number of samples whose label is among the k highest logits, for each k."""
    _, idx = paddle.topk(logits, k=max(ks), axis=-1)
    hit = paddle.cast(idx == labels.reshape([-1, 1]), "float32")
    return [hit[:, :k].sum().item() for k in ks]


@paddle.no_grad()
def evaluate_model(model, loader, loss_fn, topk=(1, 5), class_num=1000, amp_ctx=None):
    """-> {"loss", "top1", "top5" (the first two ks, named by k), "samples"}.

    Counts are summed over ranks, so a sharded eval set gives the metric of the whole set.
    """
    ks = effective_topk(topk, class_num)
    was_training = model.training
    model.eval()
    n, loss_sum, correct = 0, 0.0, [0.0] * len(ks)
    for images, labels in loader:
        labels = labels.reshape([-1]).astype("int64")
        if amp_ctx is not None:
            with amp_ctx():
                logits = model(images)
        else:
            logits = model(images)
        logits = logits.astype("float32")
        bs = labels.shape[0]
        loss_sum += loss_fn(logits, labels).item() * bs
        for i, c in enumerate(topk_correct(logits, labels, ks)):
            correct[i] += c
        n += bs
    if was_training:
        model.train()
    totals = dist.all_reduce_sum([n, loss_sum] + correct)
    n, loss_sum, correct = totals[0], totals[1], totals[2:]
    if n == 0:
        raise ValueError("the evaluation data set is empty (DataLoader.Eval)")
    out = {"loss": loss_sum / n, "samples": int(n)}
    for k, c in zip(ks, correct):
        out[f"top{k}"] = c / n
    out["topk"] = ks
    return out


def evaluate(cfg, log=None):
    """tools/eval.py: build the model from Arch, load Global.pretrained_model (or the weights of
    Global.checkpoints), run DataLoader.Eval and return the metrics dict."""
    from ..config import ConfigError
    from ..data import build_dataloader
    from ..models import build_model_from_arch
    from . import checkpoint as ckpt
    from .logger import get_logger
    from .safe_weights import untrusted_pickle_note
    from .trainer import resolve_device

    g = cfg["Global"]
    rank, world = dist.init(resolve_device(g.get("device")))
    log = log or get_logger(None, rank)
    if not cfg["DataLoader"].get("Eval"):
        raise ConfigError("DataLoader.Eval is missing: nothing to evaluate on")
    model = build_model_from_arch(cfg["Arch"])
    weights = g.get("pretrained_model") or g.get("checkpoints")
    if not weights:
        raise ConfigError("Global.pretrained_model is not set: pass the weights to evaluate, "
                          "e.g. -o Global.pretrained_model=output/demo/best_model")
    key = "Global.pretrained_model" if g.get("pretrained_model") else "Global.checkpoints"
    note = untrusted_pickle_note(weights, g.get("output_dir"), key) if rank == 0 else None
    if note:
        log.info(note)
    if g.get("pretrained_model"):
        rep = ckpt.load_pretrained(model, weights, skip_classifier_on_mismatch=False)
    else:
        rep = ckpt.load_pretrained(model, ckpt.strip_suffix(weights) + ".pdparams",
                                   skip_classifier_on_mismatch=False, key="Global.checkpoints")
    log.info(rep["message"])
    loader = build_dataloader(cfg, "Eval", rank=rank, world_size=world, epoch=0)
    m = evaluate_model(dist.wrap(model), loader, paddle.nn.CrossEntropyLoss(),
                       (cfg.get("Metric") or {}).get("topk", [1, 5]), cfg["Arch"]["class_num"])
    tail = " ".join(f"top{k} {m[f'top{k}']:.4f}" for k in m["topk"])
    log.info(f"eval: loss {m['loss']:.5f} {tail} ({m['samples']} images)")
    return m
