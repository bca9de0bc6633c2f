"""Train a MobileNet.

  python tools/train.py -c configs/demo.yaml [-o Section.key=value ...]
  python tools/train.py -c configs/demo.yaml -o Global.checkpoints=output/demo/latest   # resume
  python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/demo.yaml

Exit codes: 0 done, 2 bad config (the message names the key, file:line or -o option),
1 bad data or checkpoint (the message names the file). Other exceptions keep their traceback.
"""
from .common import config_command


def main(argv=None):
    return config_command(__doc__, argv, _train)


def _train(args):
    from ..config import load_config
    from ..engine import train
    train(load_config(args.config, args.override))
