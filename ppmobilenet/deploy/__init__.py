"""Deployment: export (Paddle Inference + Lite-ready formats), Paddle Lite conversion and checks,
ONNX, and predictors behind one interface."""
from ..io import write_labels
from .errors import CheckFailed, DeployError, LiteUnavailable
from .export import export_model
from .labels import read_labels
from .lite import convert_lite, inspect_nb, run_lite
from .lite_env import find_lite_python, provision
from .meta import read_meta
from .predictors import BACKENDS, create_predictor

__all__ = ["export_model", "convert_lite", "run_lite", "create_predictor", "find_lite_python",
           "provision", "inspect_nb", "read_meta", "read_labels", "write_labels", "BACKENDS",
           "DeployError", "LiteUnavailable", "CheckFailed"]
