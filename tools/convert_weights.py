"""Convert weights to safetensors: the command is ppmobilenet/cli/convert_weights.py (usage: python tools/convert_weights.py -h)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.cli.convert_weights import main  # noqa: E402  (imports no paddle: main sets the CPU up first)

if __name__ == "__main__":
    sys.exit(main())
