"""One interface over four runtimes: predict(batch [N, C, H, W] float32) -> [N, classes].

backend   model                         runs in
dygraph   config Arch + checkpoint      this process (paddle.nn)
paddle    export dir inference.json     Paddle Inference (oneDNN on CPU)
lite      export dir lite/*_x86.nb      Paddle Lite, in the Lite interpreter (subprocess)
onnx      export dir inference.onnx     onnxruntime
auto      export dir                    onnx when onnxruntime is installed and the export has
                                        inference.onnx, else paddle: the fastest CPU path
                                        (docs/benchmark_findings.md, finding 4)

Threads: paddle and onnx take a thread count; without one (threads=None) they use all cores for
a call of real work and one thread for a call too small to share (threads_for).
"""
import os
from importlib.util import find_spec

import numpy as np
import paddle
from paddle import inference

from ppmobilenet.cpu import available_cores, keep_freed_memory
from ppmobilenet.models import build_model_from_arch
from ppmobilenet.weights import load_weights

from .errors import DeployError
from .lite import run_lite
from .lite_env import find_lite_python
from .meta import LEGACY_FILES, PIR_FILES, read_meta, require_files
from .lite import inspect_nb

BACKENDS = ("auto", "dygraph", "paddle", "lite", "onnx")
# Below this many multiply-adds per call one thread beats all cores: starting and joining the
# threads of every layer costs more than they save. Measured with tools/benchmark.py on 2 cores
# (docs/benchmark_findings.md, finding 5): the demo model (3.4M MACs an image) at batch 1 runs
# 1.4x faster on one thread in both ONNX Runtime and Paddle Inference; at batch 8 (27M) two
# threads win by 1.3-1.7x.
SMALL_CALL_MACS = 15_000_000
DEFAULT_BACKEND = "auto"  # tools/infer.py's --backend default
ONNX_FILE = "inference.onnx"


def resolve_backend(backend, export_dir=None, onnx_file=None):
    """"auto" -> "onnx" or "paddle"; any other name unchanged. ONNX Runtime runs MobileNet
    1.3-1.5x faster than Paddle Inference on the CPUs measured, so it wins where it can run."""
    if backend != "auto":
        return backend
    onnx_file = onnx_file or (os.path.join(export_dir, ONNX_FILE) if export_dir else None)
    if onnx_file and os.path.isfile(onnx_file) and find_spec("onnxruntime") is not None:
        return "onnx"
    return "paddle"


def threads_for(batch, macs_per_image, max_threads):
    """The thread count for one call of `batch` images (see SMALL_CALL_MACS)."""
    if max_threads <= 1 or not macs_per_image:
        return max_threads
    return 1 if batch * macs_per_image < SMALL_CALL_MACS else max_threads


class _PerThreadCount:
    """Runtimes fix their thread count when they are made: one instance per count in use,
    made on first use, chosen per call by threads_for (or always `threads` when given)."""

    def __init__(self, make, threads=None, macs_per_image=None):
        self._make, self._fixed, self._macs = make, threads, macs_per_image
        self._max = available_cores()
        self._made = {}

    def count_for(self, batch):
        return int(self._fixed) if self._fixed else threads_for(batch, self._macs, self._max)

    def for_batch(self, batch):
        t = self.count_for(batch)
        if t not in self._made:
            self._made[t] = self._make(t)
        return self._made[t]


class Predictor:
    backend = None

    def predict(self, batch):
        raise NotImplementedError

    def predict_batches(self, batches):
        return [self.predict(b) for b in batches]

    def threads_for_batch(self, batch):
        """The thread count a call of `batch` images runs with (None: the runtime decides)."""
        return None


class PaddlePredictor(Predictor):
    """Paddle Inference on an export folder. The defaults are what tools/infer.py runs; the other
    options are the ones tools/benchmark.py compares (docs/benchmarks.md): oneDNN off, the legacy
    program, OpenVINO inside Paddle Inference, no IR passes, oneDNN's shape cache capacity,
    memory_optim, the GPU; keep_memory=False leaves glibc's malloc as it is (plain Paddle)."""
    backend = "paddle"

    def __init__(self, export_dir, threads=None, use_onednn=True, legacy=False, macs_per_image=None,
                 openvino=False, ir_optim=None, onednn_cache_capacity=None, memory_optim=False,
                 keep_memory=True, gpu=False, optim_cache_dir=None):
        if keep_memory:
            # Paddle frees every activation after each run and glibc hands large blocks back to
            # the kernel, so the next run faults them in again (ppmobilenet/cpu.py)
            keep_freed_memory()
        files = LEGACY_FILES if legacy else PIR_FILES
        require_files(export_dir, files)
        paths = [os.path.join(export_dir, f) for f in files]
        options = dict(use_onednn=use_onednn, openvino=openvino, ir_optim=ir_optim, gpu=gpu,
                       onednn_cache_capacity=onednn_cache_capacity, memory_optim=memory_optim,
                       # OpenVINO caches its compiled model; its default is ./__cache__ in the cwd
                       optim_cache_dir=optim_cache_dir or os.path.join(export_dir, ".openvino_cache"))
        self._runtimes = _PerThreadCount(lambda t: self._make(paths, t, **options), threads,
                                         macs_per_image)
        self._runtimes.for_batch(1)  # bad files fail here, not on the first batch

    @staticmethod
    def _make(paths, threads, use_onednn, openvino, ir_optim, onednn_cache_capacity, memory_optim,
              gpu, optim_cache_dir):
        config = inference.Config(*paths)
        if gpu:
            config.enable_use_gpu(256, 0)
        else:
            config.disable_gpu()
        if openvino:
            config.enable_openvino_engine(inference.PrecisionType.Float32)
            config.set_optim_cache_dir(optim_cache_dir)
        if use_onednn:
            config.enable_onednn()
            if onednn_cache_capacity is not None:
                config.set_onednn_cache_capacity(int(onednn_cache_capacity))
        else:
            config.disable_onednn()
        if ir_optim is not None:
            config.switch_ir_optim(bool(ir_optim))
        if memory_optim:
            config.enable_memory_optim()
        config.set_cpu_math_library_num_threads(int(threads))
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        return (predictor, predictor.get_input_handle(predictor.get_input_names()[0]),
                predictor.get_output_handle(predictor.get_output_names()[0]))

    def threads_for_batch(self, batch):
        return self._runtimes.count_for(batch)

    def predict(self, batch):
        batch = np.ascontiguousarray(batch, dtype="float32")
        predictor, inp, out = self._runtimes.for_batch(len(batch))
        inp.reshape(list(batch.shape))
        inp.copy_from_cpu(batch)
        predictor.run()
        return out.copy_to_cpu()


class OnnxPredictor(Predictor):
    backend = "onnx"

    def __init__(self, onnx_file, threads=None, macs_per_image=None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise DeployError("backend onnx needs onnxruntime: pip install onnxruntime "
                              "(or pip install 'ppmobilenet[onnx]')") from None
        if not os.path.isfile(onnx_file):
            raise DeployError(f"ONNX model {onnx_file}: not found (export with --onnx)")
        self._sessions = _PerThreadCount(lambda t: self._make(onnx_file, t), threads, macs_per_image)
        self._input = self._sessions.for_batch(1).get_inputs()[0].name  # a bad file fails here

    @staticmethod
    def _make(onnx_file, threads):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # paddle2onnx leaves an unused initializer ORT warns about
        opts.intra_op_num_threads = int(threads)
        try:
            return ort.InferenceSession(onnx_file, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise DeployError(f"ONNX model {onnx_file}: cannot be loaded ({e})") from None

    def threads_for_batch(self, batch):
        return self._sessions.count_for(batch)

    def predict(self, batch):
        batch = np.ascontiguousarray(batch, dtype="float32")
        return self._sessions.for_batch(len(batch)).run(None, {self._input: batch})[0]


class LitePredictor(Predictor):
    """An x86 .nb in Lite's own runtime. All batches go through one subprocess call."""
    backend = "lite"

    def __init__(self, nb, lite_python=None, runtime=None):
        if os.path.basename(nb).endswith("_arm.nb"):
            raise DeployError(f"Lite model {nb}: an ARM .nb runs on x86 without error but returns "
                              f"garbage; use the x86 .nb here and the ARM one on the board")
        inspect_nb(nb)
        self.nb = nb
        self.runtime = runtime or find_lite_python(lite_python)

    def predict(self, batch):
        return self.predict_batches([batch])[0]

    def predict_batches(self, batches):
        return run_lite(self.nb, list(batches), runtime=self.runtime)


class DygraphPredictor(Predictor):
    backend = "dygraph"

    def __init__(self, cfg, checkpoint=None, softmax=None):
        keep_freed_memory()
        self.model = build_model_from_arch(cfg["Arch"])
        path = checkpoint or (cfg.get("Global") or {}).get("pretrained_model")
        if not path:
            raise DeployError("backend dygraph needs weights: pass --checkpoint or set "
                              "Global.pretrained_model")
        load_weights(self.model, path, own_dir=(cfg.get("Global") or {}).get("output_dir"))
        self.model.eval()
        if softmax is None:
            softmax = (cfg.get("Export") or {}).get("softmax", True)
        self.softmax = softmax

    def predict(self, batch):
        with paddle.no_grad():
            out = self.model(paddle.to_tensor(np.asarray(batch, dtype="float32")))
            if self.softmax:
                out = paddle.nn.functional.softmax(out, axis=-1)
        return out.numpy()


def lite_nb_for(export_dir):
    """The x86 .nb recorded in export_meta.json (the one Lite can run numerically on x86)."""
    meta = read_meta(export_dir)
    entry = (meta.get("lite") or {}).get("x86")
    if not entry:
        raise DeployError(f"export folder {export_dir}: no x86 Lite model recorded in export_meta.json; "
                          f"convert with tools/export.py --lite x86")
    return os.path.join(export_dir, entry["file"])


def create_predictor(backend, export_dir=None, cfg=None, checkpoint=None, threads=None,
                     lite_python=None, nb=None, onnx_file=None):
    if backend not in BACKENDS:
        raise DeployError(f"backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        if not export_dir:
            raise DeployError("backend auto needs an export folder (--model-dir or "
                              "Global.save_inference_dir)")
        require_files(export_dir, PIR_FILES)  # a damaged export is reported, whichever runs
        backend = resolve_backend("auto", export_dir, onnx_file)
    if backend == "dygraph":
        if cfg is None:
            raise DeployError("backend dygraph needs a config (-c) for Arch")
        return DygraphPredictor(cfg, checkpoint)
    if backend == "lite" and nb:
        return LitePredictor(nb, lite_python)
    if not export_dir:
        raise DeployError(f"backend {backend} needs an export folder (--model-dir or "
                          f"Global.save_inference_dir)")
    macs = _macs_per_image(export_dir)
    if backend == "paddle":
        return PaddlePredictor(export_dir, threads=threads, macs_per_image=macs)
    if backend == "lite":
        return LitePredictor(lite_nb_for(export_dir), lite_python)
    return OnnxPredictor(onnx_file or os.path.join(export_dir, ONNX_FILE), threads=threads,
                         macs_per_image=macs)


def _macs_per_image(export_dir):
    """From export_meta.json (None for an export made before it was recorded: all cores)."""
    try:
        macs = read_meta(export_dir).get("macs_per_image")
    except DeployError:
        return None
    return macs if isinstance(macs, (int, float)) and not isinstance(macs, bool) and macs > 0 \
        else None
