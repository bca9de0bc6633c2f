"""Deployment: export (Paddle Inference + Lite-ready formats), Paddle Lite conversion and checks,
ONNX, and predictors behind one interface.

Importing the package loads no Paddle: the ONNX Runtime and Lite predictors (runtimes.py) run in
a process without it. The Paddle side is imported from its own modules: deploy.export
(export_model), deploy.predictors (create_predictor, PaddlePredictor, DygraphPredictor).
"""
from ..io import write_labels
from .errors import CheckFailed, DeployError, LiteUnavailable
from .lite import convert_lite, inspect_nb, run_lite
from .lite_env import find_lite_python, provision
from .meta import read_meta
from .runtimes import BACKENDS

__all__ = ["convert_lite", "run_lite", "find_lite_python", "provision", "inspect_nb", "read_meta",
           "write_labels", "BACKENDS", "DeployError", "LiteUnavailable", "CheckFailed"]

