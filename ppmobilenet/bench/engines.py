"""The Paddle engines the benchmark times, made of the package's own parts: inference through
ppmobilenet.deploy.predictors (what tools/infer.py runs), and the training step of tools/train.py
on one fixed batch (a rank of data parallel training under paddle.distributed.launch)."""
import paddle

from ppmobilenet.deploy.predictors import DEFAULT_BACKEND, DygraphPredictor, PaddlePredictor, create_predictor
from ppmobilenet.engine import dist
from ppmobilenet.engine.trainer import train_step
from ppmobilenet.kernels import enable_for_training
from ppmobilenet.models import build_model_from_arch
from ppmobilenet.weights import load_weights

from .worker import Inference, Training


def make(spec):
    kind, path = spec["kind"], spec["path"]
    if kind == "train":
        return _training(spec)
    if kind == "default":  # tools/infer.py without --backend and --threads
        p = create_predictor(DEFAULT_BACKEND, export_dir=path)
        return Inference(p.predict, spec["inputs"], {"backend": p.backend, "threads": "auto"},
                         p.threads_for_batch)
    if kind == "paddle":
        p = PaddlePredictor(path, threads=spec["threads"], **spec["options"])
    else:  # dygraph; the weights file sits in the benchmark's own work folder
        p = DygraphPredictor({"Arch": spec["arch"], "Global": {"output_dir": spec["work_dir"]}}, path,
                             softmax=True)
    return Inference(p.predict, spec["inputs"], {"backend": p.backend})


def _training(spec):
    """The trainer's train_step (forward, loss, backward, Momentum) with the CPU paths the variant
    names (options compiled / packed: ppmobilenet.kernels, as tools/train.py switches them; amp),
    dropout off (MobileNetV3's: one elementwise op whose masks no two engines draw alike).
    Each rank of data parallel training takes its slice of the batch (BatchNorm normalises each
    slice by itself)."""
    options, device = spec.get("options") or {}, spec.get("device", "cpu")
    rank, world = dist.init(device)
    model = build_model_from_arch(spec["arch"])
    load_weights(model, spec["path"], own_dir=spec["work_dir"])
    for layer in model.sublayers():  # as the PyTorch peer: random masks would part the losses
        if isinstance(layer, paddle.nn.Dropout):
            layer.p = 0.0
    enable_for_training(model, device, compiled=options.get("compiled", False),
                        packed=options.get("packed", False))
    net, loss_fn = dist.wrap(model.train()), paddle.nn.CrossEntropyLoss()
    lr = paddle.optimizer.lr.LambdaDecay(0.01, lambda epoch: 1.0)  # constant (train_step steps it)
    opt = paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=model.parameters())
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024.0) if options.get("amp") else None  # AMP O1 (GPU)

    def make_step(x, y):
        if len(x) % world:
            raise ValueError(f"batch {len(x)} does not split over {world} processes")
        x, y = (paddle.to_tensor(a[rank * len(a) // world:(rank + 1) * len(a) // world]) for a in (x, y))

        def step():
            # tools/train.py's step; its loss.item() waits for the step, as a training loop's
            # logging does. The mean over the ranks is the whole batch's loss (agreement check)
            return dist.all_reduce_sum([train_step(net, x, y, loss_fn, opt, lr, scaler)[0]])[0] / world
        return step
    return Training(make_step, spec, {"ranks": world})
