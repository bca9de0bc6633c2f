"""The ONNX Runtime engine: deploy.runtimes' OnnxPredictor, in a process that loads no Paddle
(its peak memory is ONNX Runtime's own)."""
from ppmobilenet.deploy.runtimes import OnnxPredictor

from .worker import Inference


def make(spec):
    p = OnnxPredictor(spec["path"], threads=spec["threads"])
    return Inference(p.predict, spec["inputs"], {"backend": p.backend})
