"""Evaluate trained weights on DataLoader.Eval: top-1, top-k and loss.

  python tools/eval.py -c configs/demo.yaml -o Global.pretrained_model=output/demo/best_model
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.engine.cli import run_tool  # noqa: E402  (imports no paddle)

if __name__ == "__main__":
    sys.exit(run_tool(__doc__, "evaluate"))
