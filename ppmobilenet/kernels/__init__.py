"""Compiled CPU operators for what Paddle runs on one thread (issue 13), with a pure-Paddle
fallback: the 3x3 and 5x5 depthwise convolutions, forward and both gradients, and BatchNorm +
activation (csrc/). Importing this
package builds nothing; enable_for_training() compiles on first use (build.py) and switches a
model's layers (layers.py), or falls back to the packed path (packed.py)."""
from .build import BuildFailed
from .training import ENV, compiled_wanted, enable_for_training

__all__ = ["BuildFailed", "ENV", "compiled_wanted", "enable_for_training"]
