#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the package with its test, demo and ONNX
# extras into the current Python, provisions the Python <= 3.10 interpreter that Paddle Lite needs,
# then runs pytest with Lite required (a missing Lite fails instead of skipping).
# Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q -e ".[test,demo,onnx]"
LITE_PYTHON=$("$PYTHON" tools/provision_lite.py --print-python)
export PPMOBILENET_LITE_PYTHON="$LITE_PYTHON"
export PPMOBILENET_REQUIRE_LITE=1
exec "$PYTHON" -m pytest tests -ra "$@"
