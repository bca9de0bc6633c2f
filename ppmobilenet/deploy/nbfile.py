"""Temporary re-export shim for predictors.py: inspect_nb lives in lite.py (on ppmobilenet.board);
remove at integration."""
from .lite import inspect_nb  # noqa: F401
