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
The onnx and lite predictors live in deploy/runtimes.py, which imports no Paddle.
"""
import os

import numpy as np
import paddle
from paddle import inference

from ..cpu import keep_freed_memory
from ..models import build_model_from_arch
from ..weights import load_weights
from .errors import DeployError
from .meta import LEGACY_FILES, PIR_FILES, require_files
from .runtimes import (BACKENDS, DEFAULT_BACKEND, ONNX_FILE, SMALL_CALL_MACS, LitePredictor,  # noqa: F401
                       OnnxPredictor, PerThreadCount, Predictor, lite_nb_for, macs_per_image,
                       resolve_backend, threads_for)


class PaddlePredictor(Predictor):
    """Paddle Inference on an export folder. The defaults are what tools/infer.py runs; the other
    options are the ones tools/benchmark.py compares (docs/benchmarks.md): oneDNN off, the legacy
    program, OpenVINO inside Paddle Inference, the GPU."""
    backend = "paddle"

    def __init__(self, export_dir, threads=None, use_onednn=True, legacy=False, macs_per_image=None,
                 openvino=False, gpu=False, optim_cache_dir=None):
        # Paddle frees every activation after each run and glibc hands large blocks back to the
        # kernel, so the next run faults them in again (ppmobilenet/cpu.py)
        keep_freed_memory()
        files = LEGACY_FILES if legacy else PIR_FILES
        require_files(export_dir, files)
        paths = [os.path.join(export_dir, f) for f in files]
        options = dict(use_onednn=use_onednn, openvino=openvino, gpu=gpu,
                       # OpenVINO caches its compiled model; its default is ./__cache__ in the cwd
                       optim_cache_dir=optim_cache_dir or os.path.join(export_dir, ".openvino_cache"))
        self._runtimes = PerThreadCount(lambda t: self._make(paths, t, **options), threads,
                                         macs_per_image)
        self._runtimes.for_batch(1)  # bad files fail here, not on the first batch

    @staticmethod
    def _make(paths, threads, use_onednn, openvino, gpu, optim_cache_dir):
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
        else:
            config.disable_onednn()
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
    macs = macs_per_image(export_dir)
    if backend == "paddle":
        return PaddlePredictor(export_dir, threads=threads, macs_per_image=macs)
    if backend == "lite":
        return LitePredictor(lite_nb_for(export_dir), lite_python)
    return OnnxPredictor(onnx_file or os.path.join(export_dir, ONNX_FILE), threads=threads,
                         macs_per_image=macs)
