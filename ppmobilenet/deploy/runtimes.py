"""The runtimes that need no Paddle: ONNX Runtime and Paddle Lite's x86 .nb, behind the
predictors' interface (predict(batch [N, C, H, W] float32) -> [N, classes]), and the choices
every backend shares (auto's pick, the thread count per call). This module and what it imports
load no Paddle, so a process that only runs these holds only their memory (tests/
test_deploy_without_paddle.py); ppmobilenet.deploy.predictors adds Paddle Inference and dygraph.
"""
import os
from importlib.util import find_spec

import numpy as np

from ..cpu import available_cores
from .errors import DeployError
from .lite import inspect_nb, run_lite
from .lite_env import find_lite_python
from .meta import read_meta

BACKENDS = ("auto", "dygraph", "paddle", "lite", "onnx")
DEFAULT_BACKEND = "auto"  # tools/infer.py's --backend default
ONNX_FILE = "inference.onnx"
# Below this many multiply-adds per call one thread beats all cores: starting and joining the
# threads of every layer costs more than they save. Measured with tools/benchmark.py on 2 cores
# (docs/benchmark_findings.md, finding 5): the demo model (3.4M MACs an image) at batch 1 runs
# 1.4x faster on one thread in both ONNX Runtime and Paddle Inference; at batch 8 (27M) two
# threads win by 1.3-1.7x.
SMALL_CALL_MACS = 15_000_000


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


def macs_per_image(export_dir):
    """From export_meta.json (None for an export made before it was recorded: all cores)."""
    try:
        macs = read_meta(export_dir).get("macs_per_image")
    except DeployError:
        return None
    return macs if isinstance(macs, (int, float)) and not isinstance(macs, bool) and macs > 0 \
        else None


class PerThreadCount:
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
        self._sessions = PerThreadCount(lambda t: self._make(onnx_file, t), threads, macs_per_image)
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


def lite_nb_for(export_dir):
    """The x86 .nb recorded in export_meta.json (the one Lite can run numerically on x86)."""
    meta = read_meta(export_dir)
    entry = (meta.get("lite") or {}).get("x86")
    if not entry:
        raise DeployError(f"export folder {export_dir}: no x86 Lite model recorded in export_meta.json; "
                          f"convert with tools/export.py --lite x86")
    return os.path.join(export_dir, entry["file"])
