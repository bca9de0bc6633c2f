"""The shared body of tools/train.py and tools/eval.py: threads, -c/-o, errors -> exit codes.

Exit codes: 0 done, 2 bad config (the message names the key, file:line or -o option),
1 bad data or checkpoint (the message names the file). Other exceptions keep their traceback.
"""
import argparse

from ..cpu import configure_cpu
from ..errors import exit_code


def run_tool(doc, action, argv=None):
    """action: "train" or "evaluate" (a name in ppmobilenet.engine)."""
    configure_cpu()  # before paddle is imported by anything below
    from ..config import add_config_args, load_config

    parser = add_config_args(argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)

    def body():
        from .. import engine
        getattr(engine, action)(load_config(args.config, args.override))
    return exit_code(body)
