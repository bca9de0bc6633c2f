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
import sys

from .common import command_parser, run


def main(argv=None):
    def body():
        from ..deploy.lite_env import default_venv_dir, provision
        p = command_parser(__doc__)
        p.add_argument("--venv", default=None, help=f"where to build it [{default_venv_dir()}]")
        p.add_argument("--python", default=None, help="base interpreter (3.8-3.10) [searched]")
        args = p.parse_args(argv)
        print(provision(args.venv, args.python, log=lambda m: print(m, file=sys.stderr)).python)
    return run(body)
