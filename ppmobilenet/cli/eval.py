"""Evaluate trained weights on DataLoader.Eval: top-1, top-k and loss.

  python tools/eval.py -c configs/demo.yaml -o Global.pretrained_model=output/demo/best_model

Exit codes as tools/train.py's (0 done, 2 bad config, 1 bad data or weights).
"""
from .common import config_command


def main(argv=None):
    return config_command(__doc__, argv, _evaluate)


def _evaluate(args):
    from ..config import load_config
    from ..engine import evaluate
    evaluate(load_config(args.config, args.override))
