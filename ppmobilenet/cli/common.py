"""What every command shares: the -c/-o arguments and `run`, the process set-up and exit codes.

This module imports no Paddle (nor anything that does): a command imports the package inside its
body, after `run` has called `configure_cpu()` (Paddle reads the thread settings at import).

Exit codes: 0 done; an error of the project exits with its class's `exit_status` (2 a bad config,
ConfigError; 1 any other refused input: data, weights, checkpoint, export, a failed check), its
message printed after the class's `title`. Any other exception is a bug and keeps its traceback;
argparse exits 2 on bad arguments by itself.
"""
import argparse
import os
import sys

from ..cpu import configure_cpu
from ..errors import PPMobileNetError

_SET_BY_CONFIGURE_CPU = {}  # the environment variables configure_cpu set (not the user)


def add_config_args(parser, required=True):
    """-c/--config and -o/--override, repeatable (`-o A.b=1 -o C.d=2`, or `-o A.b=1 C.d=2`);
    args.override is a flat list of strings (or None)."""
    parser.add_argument("-c", "--config", required=required, default=None, help="YAML config file")
    parser.add_argument("-o", "--override", action="extend", nargs="+", default=None, metavar="KEY=VALUE",
                        help="override a config value: Section.key=value; numeric segments index "
                             "lists (DataLoader.Train.transforms.0.RandomResizedCrop.size=32); "
                             "repeatable")
    return parser


def command_parser(doc):
    """An ArgumentParser whose --help shows the command's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def run(main_body):
    """Set the process up, run main_body() (it parses its arguments and imports the package),
    and turn the project's errors into exit codes (see the module doc)."""
    _SET_BY_CONFIGURE_CPU.update(configure_cpu())   # before anything imports paddle
    try:
        return main_body() or 0
    except PPMobileNetError as e:
        print(f"{e.title}: {e}", file=sys.stderr)
        return e.exit_status


def config_command(doc, argv, body):
    """A command whose arguments are -c/-o only: parse them, then body(args) under run()."""
    return run(lambda: body(add_config_args(command_parser(doc)).parse_args(argv)))


def user_threads():
    """OMP_NUM_THREADS when the user set it; None (the caller's own choice) when unset or set by
    configure_cpu."""
    if "OMP_NUM_THREADS" in _SET_BY_CONFIGURE_CPU or not os.environ.get("OMP_NUM_THREADS"):
        return None
    return int(os.environ["OMP_NUM_THREADS"])
