"""Export a trained model for Paddle Inference and Paddle Lite (and ONNX): the command is ppmobilenet/cli/export.py (usage: python tools/export.py -h)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.cli.export import main  # noqa: E402  (imports no paddle: main sets the CPU up first)

if __name__ == "__main__":
    sys.exit(main())
