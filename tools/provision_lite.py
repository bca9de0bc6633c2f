"""Build the Python venv that runs Paddle Lite (paddlelite==2.13rc0 has wheels for Python 3.8-3.10
only, and needs numpy<2) and print its interpreter's path.

  python tools/provision_lite.py                       # ~/.cache/ppmobilenet/lite-venv
  python tools/provision_lite.py --venv DIR --python /usr/bin/python3.10

The base interpreter is the first working python3.10 / 3.9 / 3.8 on PATH, else one from
`pyenv versions` (its real binary under `pyenv prefix`, as the python3.X shims fail unless a
version is selected). tools/export.py --lite and tools/infer.py --backend lite find this venv
by themselves; $PPMOBILENET_LITE_VENV moves it, $PPMOBILENET_LITE_PYTHON or --lite-python
name another interpreter. Rerunning is cheap: a ready venv is only checked.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.deploy.cli import provision_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(provision_main(__doc__))
