"""Evaluate trained weights on DataLoader.Eval: the command is ppmobilenet/cli/eval.py (usage: python tools/eval.py -h)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.cli.eval import main  # noqa: E402  (imports no paddle: main sets the CPU up first)

if __name__ == "__main__":
    sys.exit(main())
