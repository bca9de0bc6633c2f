"""One benchmark engine in one fresh process, driven line by line over stdin/stdout.

    python worker.py SPEC_JSON            (started by ppmobilenet.bench.procs, never by hand)

Why a process per engine: every engine gets its own thread pool and its own peak memory
(VmHWM of this process), environment variables that must be set before a library is imported
(OMP_NUM_THREADS, MKL_DEBUG_CPU_TYPE, FLAGS_*) stay per engine, and the Lite engine can run in
the Lite interpreter. So this file needs only the standard library and numpy at import time, and
runs as a script under Python 3.8+ (the Lite venv has no paddle and no ppmobilenet).

Protocol: one JSON object a line each way; replies go to the original stdout, which is then
pointed at stderr so that library chatter (glog, paddle2onnx) cannot corrupt them.
    {"op": "prepare", "batch": B, "warmup": W} -> {"ok": true, "first_s": ..}   (W untimed runs)
    {"op": "time", "n": N}                       -> {"wall": [..N s..], "cpu": [..]}
    {"op": "outputs", "path": P}                 -> {"ok": true}  (np.save of the agreement run)
    {"op": "quit"}                               -> {"maxrss_kb": .., "base_rss_kb": ..}
Errors come back as {"error": "..."}; the parent names the engine and shows this process's stderr.
"""
import json
import os
import resource
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def maxrss_kb():
    """Peak resident memory of this process in KiB: VmHWM, which starts afresh at exec, unlike
    ru_maxrss, which Linux carries over from the parent (the benchmark itself holds paddle)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _threads(spec):
    return int(spec.get("threads") or 1)


def _inputs(spec):
    import numpy as np
    with np.load(spec["inputs"]) as f:
        return np.ascontiguousarray(f["x"], dtype="float32")


def _tile(x, batch):
    """The first `batch` images, repeated when the input file holds fewer."""
    import numpy as np
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch])


# ---------------------------------------------------------------- inference engines

class Inference:
    """Subclasses set self.predict(array) -> array."""

    def __init__(self, spec):
        self.spec = spec
        self.x_all = _inputs(spec)
        self.x = None

    def prepare(self, batch):
        self.x = _tile(self.x_all, batch)

    def step(self):
        return self.predict(self.x)

    def outputs(self):
        return self.predict(self.x_all)


class PaddleInference(Inference):
    """Paddle Inference on the export folder: options as in ppmobilenet.deploy.PaddlePredictor,
    plus the knobs the benchmark studies (ir_optim, cache capacity, OpenVINO, legacy format)."""

    def __init__(self, spec):
        super().__init__(spec)
        from paddle import inference
        d, o = spec["export_dir"], spec.get("options") or {}
        legacy = o.get("format") == "legacy"
        files = ("lite/inference.pdmodel", "lite/inference.pdiparams") if legacy else \
            ("inference.json", "inference.pdiparams")
        config = inference.Config(*(os.path.join(d, f) for f in files))
        config.disable_gpu()
        if o.get("openvino"):
            config.enable_openvino_engine(inference.PrecisionType.Float32)
            # OpenVINO caches its compiled model; the default is ./__cache__ in the cwd
            config.set_optim_cache_dir(o.get("cache_dir") or os.path.join(spec["work_dir"], "ov_cache"))
        if o.get("onednn", True):
            config.enable_onednn()
            if o.get("cache_capacity") is not None:
                config.set_onednn_cache_capacity(int(o["cache_capacity"]))
        else:
            config.disable_onednn()
        if o.get("ir_optim") is not None:
            config.switch_ir_optim(bool(o["ir_optim"]))
        if o.get("memory_optim"):
            config.enable_memory_optim()
        config.set_cpu_math_library_num_threads(_threads(spec))
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        inp = predictor.get_input_handle(predictor.get_input_names()[0])
        out = predictor.get_output_handle(predictor.get_output_names()[0])

        def predict(x):
            inp.reshape(list(x.shape))
            inp.copy_from_cpu(x)
            predictor.run()
            return out.copy_to_cpu()
        self.predict = predict


class OnnxRuntime(Inference):
    def __init__(self, spec):
        super().__init__(spec)
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = _threads(spec)
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(spec["onnx_file"], opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        self.predict = lambda x: session.run(None, {name: x})[0]


class Lite(Inference):
    """An x86 .nb in Paddle Lite's runtime; runs under the Lite interpreter."""

    def __init__(self, spec):
        super().__init__(spec)
        from paddlelite.lite import MobileConfig, create_paddle_predictor
        config = MobileConfig()
        config.set_model_from_file(spec["nb"])
        predictor = create_paddle_predictor(config)

        def predict(x):
            predictor.get_input(0).from_numpy(x)
            predictor.run()
            return predictor.get_output(0).numpy().copy()
        self.predict = predict


class Dygraph(Inference):
    """The model in paddle.nn eager mode, eval + no_grad, softmax appended as the export does."""

    def __init__(self, spec):
        super().__init__(spec)
        import paddle
        model = _paddle_model(spec)
        model.eval()
        softmax = spec.get("softmax", True)

        def predict(x):
            with paddle.no_grad():
                y = model(paddle.to_tensor(x))
                if softmax:
                    y = paddle.nn.functional.softmax(y, axis=-1)
            return y.numpy()
        self.predict = predict


class Default(Inference):
    """Whatever ppmobilenet.deploy.create_predictor gives tools/infer.py for an export folder
    when the user names no backend and no thread count: the project's default CPU path."""

    def __init__(self, spec):
        super().__init__(spec)
        from ppmobilenet.deploy import create_predictor
        from ppmobilenet.deploy.predictors import DEFAULT_BACKEND
        backend = spec.get("backend") or DEFAULT_BACKEND
        # infer_main passes no thread count unless the user gave one: the predictor picks
        self.predictor = create_predictor(backend, export_dir=spec["export_dir"], threads=None)
        self.predict = self.predictor.predict
        self.info = {"backend": self.predictor.backend, "threads": "auto"}

    def prepare(self, batch):
        super().prepare(batch)
        return {"threads": self.predictor.threads_for_batch(batch)}


class TorchEval(Inference):
    def __init__(self, spec):
        super().__init__(spec)
        import torch
        torch.set_num_threads(_threads(spec))
        model = _torch_model(spec).eval()

        def predict(x):
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()
        self.predict = predict


def _paddle_model(spec):
    import paddle
    sys.path.insert(0, ROOT)
    from ppmobilenet.models import build_model_from_arch
    paddle.seed(int(spec.get("seed", 0)))
    model = build_model_from_arch(spec["arch"])
    if spec.get("weights"):
        model.set_state_dict(paddle.load(spec["weights"]))
    return model


def _train_model(spec):
    """The Paddle model in train mode, with the packed depthwise path where the variant (like
    tools/train.py on CPU) uses it."""
    model = _paddle_model(spec)
    if (spec.get("options") or {}).get("packed_depthwise"):
        from ppmobilenet.models.packed_depthwise import use_packed_depthwise
        use_packed_depthwise(model)
    model.train()
    return model


def _torch_model(spec):
    """The PyTorch peer, with the Paddle model's weights (an .npz the parent wrote) so both
    frameworks start from the same numbers."""
    import numpy as np
    import torch
    from torch_peer import build_torch_model, load_paddle_state
    torch.manual_seed(int(spec.get("seed", 0)))
    model = build_torch_model(spec["arch"])
    if spec.get("weights_npz"):
        with np.load(spec["weights_npz"]) as f:
            load_paddle_state(model, {k: f[k] for k in f.files})
    return model


# ---------------------------------------------------------------- training engines

class Train:
    """Training steps (forward, loss, backward, Momentum update) on one fixed random batch:
    compute only, the data pipeline is measured separately. `outputs` are the losses of the
    first two steps from the shared initial weights: the first checks the forward pass, the
    second the gradients and the update (later ones drift apart chaotically on random labels)."""
    agree_steps = 2

    def __init__(self, spec):
        self.spec = spec
        self.batch = None
        self.losses = None

    def _data(self, batch):
        import numpy as np
        c, h, w = self.spec["image_shape"]
        rng = np.random.RandomState(int(self.spec.get("seed", 0)))
        x = rng.standard_normal((batch, c, h, w)).astype("float32")
        y = rng.randint(0, int(self.spec["arch"]["class_num"]), (batch,)).astype("int64")
        return x, y

    def prepare(self, batch):
        if self.losses is None:  # from the initial weights, before any timed step
            self.build(batch)
            self.losses = [self.local_step() for _ in range(self.agree_steps)]
        elif batch != self.batch:
            raise ValueError("a training engine is timed at one batch size")
        self.batch = batch

    def step(self):
        return self.local_step()

    def outputs(self):
        import numpy as np
        return np.asarray(self.losses, dtype="float64")


class PaddleTrain(Train):
    def build(self, batch):
        import paddle
        o = self.spec.get("options") or {}
        if o.get("onednn"):
            paddle.set_flags({"FLAGS_use_mkldnn": True, "FLAGS_use_onednn": True})
        model = _train_model(self.spec)
        opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9,
                                        parameters=model.parameters())
        loss_fn = paddle.nn.CrossEntropyLoss()
        if o.get("to_static"):
            model = paddle.jit.to_static(model, full_graph=True)
        x, y = self._data(batch)
        x, y = paddle.to_tensor(x), paddle.to_tensor(y)

        def step():
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            return loss.item()  # waits for the step, as a training loop's logging does
        self.local_step = step


class TorchTrain(Train):
    def build(self, batch):
        import torch
        torch.set_num_threads(_threads(self.spec))
        o = self.spec.get("options") or {}
        model = _torch_model(self.spec).train()
        x, y = self._data(batch)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if o.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.item()
        self.local_step = step


class PaddleTrainDP(PaddleTrain):
    """Data parallel over the cores: `procs` processes on one thread each, each a slice of the
    batch, gradients all-reduced with gloo (paddle.DataParallel), as
    `python -m paddle.distributed.launch --nproc_per_node N tools/train.py` runs. Rank 0 is this
    worker; it starts the other ranks and tells them each step to run, so all ranks stay in
    lockstep. Commands go over the other ranks' stdin, not over gloo: a rank that
    waits in a collective times out while the others' turns take minutes.
    BatchNorm uses each rank's own slice for its statistics."""
    PREPARE, STEP, QUIT = 1, 2, 3

    def __init__(self, spec):
        super().__init__(spec)
        import paddle.distributed as dist
        self.dist = dist
        self.world = int(os.environ["PADDLE_TRAINERS_NUM"])
        self.rank = int(os.environ["PADDLE_TRAINER_ID"])
        self.followers = []
        if self.rank == 0:
            for rank, env in enumerate(spec["_rank_envs"]):
                if rank:
                    self.followers.append(subprocess.Popen(
                        [sys.executable, os.path.abspath(__file__),
                         json.dumps(dict(spec, follower=True, _rank_envs=None))], env=env,
                        stdin=subprocess.PIPE, stdout=sys.stderr, stderr=sys.stderr, text=True))
        dist.init_parallel_env()

    def _cmd(self, op, arg=0):
        for p in self.followers:
            p.stdin.write(f"{op} {arg}\n")
            p.stdin.flush()

    def build(self, batch):
        import paddle
        if batch % self.world:
            raise ValueError(f"batch {batch} does not split over {self.world} processes")
        model = _train_model(self.spec)
        opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9,
                                        parameters=model.parameters())
        net = paddle.DataParallel(model)
        loss_fn = paddle.nn.CrossEntropyLoss()
        x, y = self._data(batch)
        per = batch // self.world
        x = paddle.to_tensor(x[self.rank * per:(self.rank + 1) * per])
        y = paddle.to_tensor(y[self.rank * per:(self.rank + 1) * per])
        dist = self.dist

        def local_step():
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            total = loss.detach()
            dist.all_reduce(total)  # the loss of the whole batch, for the agreement check
            return total.item() / self.world
        self.local_step = local_step

    def step(self):
        if self.rank == 0:
            self._cmd(self.STEP)
        return self.local_step()

    def prepare(self, batch):
        if self.rank == 0:
            self._cmd(self.PREPARE, batch)
        super().prepare(batch)

    def follow(self):
        """The loop of ranks > 0: do what rank 0 says until it says quit."""
        for line in sys.stdin:
            op, arg = (int(v) for v in line.split())
            if op == self.PREPARE:
                super().prepare(arg)
            elif op == self.STEP:
                self.local_step()
            else:
                break
        with open(self.spec["_rss_file"] + f".{self.rank}", "w") as f:
            f.write(str(maxrss_kb()))

    def close(self):
        self._cmd(self.QUIT)
        rss = 0
        for rank, p in enumerate(self.followers, 1):
            p.wait(timeout=120)
            try:
                with open(self.spec["_rss_file"] + f".{rank}") as f:
                    rss += int(f.read())
            except (OSError, ValueError):
                pass
        return {"other_ranks_rss_kb": rss}


def _free_ports(n):
    import socket
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _dp_env(spec):
    """The environment paddle.distributed.launch gives each rank on one machine (gloo, CPU)."""
    world = int(spec.get("procs") or 2)
    threads = max(1, _threads(spec) // world)
    ports = _free_ports(world + 1)
    eps = [f"127.0.0.1:{p}" for p in ports[1:]]
    envs = []
    for r in range(world):
        env = dict(os.environ, PADDLE_MASTER=f"127.0.0.1:{ports[0]}", PADDLE_GLOBAL_SIZE=str(world),
                   PADDLE_LOCAL_SIZE=str(world), PADDLE_NNODES="1", PADDLE_TRAINERS_NUM=str(world),
                   PADDLE_TRAINER_ENDPOINTS=",".join(eps), PADDLE_DISTRI_BACKEND="gloo",
                   PADDLE_GLOBAL_RANK=str(r), PADDLE_LOCAL_RANK=str(r), PADDLE_RANK_IN_NODE=str(r),
                   PADDLE_TRAINER_ID=str(r), PADDLE_CURRENT_ENDPOINT=eps[r],
                   OMP_NUM_THREADS=str(threads))
        envs.append(env)
    return envs


ENGINES = {"paddle": PaddleInference, "onnx": OnnxRuntime, "lite": Lite, "dygraph": Dygraph,
           "default": Default, "torch": TorchEval, "train_paddle": PaddleTrain,
           "train_paddle_dp": PaddleTrainDP, "train_torch": TorchTrain}


# ---------------------------------------------------------------- the loop

def _setup_env(spec):
    """Before any engine library is imported: the tuning this engine is measured with."""
    if spec.get("tune_cpu") or spec.get("keep_memory"):  # one of the project's settings alone
        sys.path.insert(0, ROOT)
        from ppmobilenet.cpu import cpu_env, keep_freed_memory
        if spec.get("tune_cpu"):
            cpu_env()
        if spec.get("keep_memory"):
            keep_freed_memory()
    if spec["kind"] == "train_paddle_dp" and not spec.get("follower"):
        envs = _dp_env(spec)
        os.environ.clear()
        os.environ.update(envs[0])
        spec["_rank_envs"] = envs
        spec["_rss_file"] = os.path.join(spec.get("work_dir") or "/tmp", f"dp-rss-{os.getpid()}")
    if spec.get("project_cpu"):  # exactly what the project's CLI runs before importing paddle
        sys.path.insert(0, ROOT)
        from ppmobilenet.cpu import configure_cpu
        configure_cpu()


def serve(spec, reply):
    base = maxrss_kb()
    _setup_env(spec)
    engine = ENGINES[spec["kind"]](spec)
    if spec.get("follower"):
        return engine.follow()
    reply({"ready": True, "pid": os.getpid(), "load_rss_kb": maxrss_kb(),
           "omp_threads": os.environ.get("OMP_NUM_THREADS"),
           "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE"),
           "engine": getattr(engine, "info", None)})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "prepare":
                t = time.perf_counter()
                extra = engine.prepare(int(cmd["batch"])) or {}
                for _ in range(int(cmd.get("warmup", 1))):
                    engine.step()
                reply(dict(extra, ok=True, first_s=time.perf_counter() - t))
            elif op == "time":
                wall, cpu = [], []
                for _ in range(int(cmd["n"])):
                    t, c = time.perf_counter(), time.process_time()
                    engine.step()
                    wall.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                reply({"wall": wall, "cpu": cpu})
            elif op == "outputs":
                import numpy as np
                np.save(cmd["path"], np.asarray(engine.outputs()))
                reply({"ok": True})
            elif op == "quit":
                extra = engine.close() if hasattr(engine, "close") else {}
                reply(dict(extra, maxrss_kb=maxrss_kb(), base_rss_kb=base))
                return
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as e:  # the parent reports it against this engine
            traceback.print_exc()
            reply({"error": f"{type(e).__name__}: {e}"})


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("follower"):  # a data-parallel rank > 0: no protocol, rank 0 drives it
        serve(spec, lambda obj: None)
        return
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # everything printed from here on (C or Python) goes to stderr
    sys.stdout = sys.stderr

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()
    try:
        serve(spec, reply)
    except Exception as e:
        traceback.print_exc()
        reply({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
