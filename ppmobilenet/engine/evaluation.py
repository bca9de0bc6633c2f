"""The metrics: top-k accuracy and loss over a data loader (summed over ranks when there are
several). The eval command is engine/commands.py."""
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

