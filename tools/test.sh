#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the package with its test, demo and ONNX
# extras into the current Python, provisions the Python <= 3.10 venv that Paddle Lite needs
# (~/.cache/ppmobilenet/lite-venv), then runs pytest with Lite and ONNX required: a missing one
# fails instead of skipping. Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch==2.13.0 is the CPU build these machines keep on disk (a bare `torch` may pull CUDA).
"$PYTHON" -m pip install -q -e ".[test,demo,onnx]" "torch==2.13.0" matplotlib
"$PYTHON" tools/provision_lite.py
export PPMOBILENET_REQUIRE_LITE=1 PPMOBILENET_REQUIRE_ONNX=1 PPMOBILENET_REQUIRE_TORCH=1
exec "$PYTHON" -m pytest tests -ra "$@"
