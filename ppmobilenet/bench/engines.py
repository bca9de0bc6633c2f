"""The Paddle engines the benchmark times, made of the package's own parts: inference through
ppmobilenet.deploy.predictors (what tools/infer.py runs), and the training step of tools/train.py
on one fixed batch (a rank of data parallel training under paddle.distributed.launch)."""
import paddle

from ppmobilenet.deploy.predictors import DEFAULT_BACKEND, DygraphPredictor, PaddlePredictor, create_predictor
from ppmobilenet.engine import dist
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
    """Forward, loss, backward, Momentum, with the CPU paths the variant names (options compiled /
    packed: ppmobilenet.kernels, as tools/train.py switches them; amp). Each rank of data
    parallel training takes its slice of the batch (BatchNorm normalises each slice by itself)."""
    options, device = spec.get("options") or {}, spec.get("device", "cpu")
    rank, world = dist.init(device)
    model = build_model_from_arch(spec["arch"])
    load_weights(model, spec["path"], own_dir=spec["work_dir"])
    enable_for_training(model, device, compiled=options.get("compiled", False),
                        packed=options.get("packed", False))
    net, loss_fn = dist.wrap(model.train()), paddle.nn.CrossEntropyLoss()
    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=model.parameters())
    amp = bool(options.get("amp"))  # AMP O1 (GPU); disabled, the scaler passes everything through
    scaler = paddle.amp.GradScaler(enable=amp, init_loss_scaling=1024.0)

    def make_step(x, y):
        if len(x) % world:
            raise ValueError(f"batch {len(x)} does not split over {world} processes")
        x, y = (paddle.to_tensor(a[rank * len(a) // world:(rank + 1) * len(a) // world]) for a in (x, y))

        def step():
            with paddle.amp.auto_cast(enable=amp, level="O1"):
                loss = loss_fn(net(x), y)
            scaler.scale(loss).backward()
            dist.average_gradients(net)   # as the trainer does (a no-op on one process)
            scaler.step(opt)
            scaler.update()
            opt.clear_grad()
            # .item() waits for the step, as a training loop's logging does; the mean over the
            # ranks is the loss of the whole batch, for the agreement check
            return dist.all_reduce_sum([loss.item()])[0] / world
        return step
    return Training(make_step, spec, {"ranks": world})
