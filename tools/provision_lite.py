"""Build the Python venv that runs Paddle Lite: the command is ppmobilenet/cli/provision_lite.py (usage: python tools/provision_lite.py -h)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.cli.provision_lite import main  # noqa: E402  (imports no paddle: main sets the CPU up first)

if __name__ == "__main__":
    sys.exit(main())
