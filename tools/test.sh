#!/usr/bin/env bash
# The whole test suite, from a fresh clone, as CI runs it: installs the package with its test, demo
# and ONNX extras into the current Python, provisions the Python <= 3.10 venv that Paddle Lite needs
# (~/.cache/ppmobilenet/lite-venv) and hands its interpreter to the tests (PPMOBILENET_LITE_PYTHON:
# the tests themselves never look into ~/.cache), then runs pytest with CI=true and Lite, ONNX and
# torch required: a missing one fails, and so does any skipped test. Extra arguments go to pytest,
# e.g. `bash tools/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch==2.13.0 is the CPU build these machines keep on disk (a bare `torch` may pull CUDA).
"$PYTHON" -m pip install -q -e ".[test,demo,onnx]" "torch==2.13.0" "torchvision==0.28.0" && "$PYTHON" -m pip install -q --no-deps "paddleclas==2.6.0"
# provision_lite.py prints the venv's interpreter as its last line
PPMOBILENET_LITE_PYTHON=$("$PYTHON" tools/provision_lite.py | tail -n 1)
export PPMOBILENET_LITE_PYTHON CI=true
export PPMOBILENET_REQUIRE_LITE=1 PPMOBILENET_REQUIRE_ONNX=1 PPMOBILENET_REQUIRE_TORCH=1
exec "$PYTHON" -m pytest tests -ra "$@"
