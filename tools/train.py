"""Train a MobileNet.

  python tools/train.py -c configs/demo.yaml [-o Section.key=value ...]
  python tools/train.py -c configs/demo.yaml -o Global.checkpoints=output/demo/latest   # resume
  python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/demo.yaml
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.engine.cli import run_tool  # noqa: E402  (imports no paddle)

if __name__ == "__main__":
    sys.exit(run_tool(__doc__, "train"))
