"""Benchmark every engine side by side: the command is ppmobilenet/cli/benchmark.py
(usage: python tools/benchmark.py -h). The benchmark also starts its engine processes through
this file (`--engine SPEC`), as `paddle.distributed.launch` starts tools/train.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.cli.benchmark import main  # noqa: E402  (imports no paddle: main sets the CPU up first)

if __name__ == "__main__":
    sys.exit(main())
