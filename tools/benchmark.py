"""Benchmark every engine side by side: inference latency / throughput / peak memory (dygraph,
Paddle Inference with and without oneDNN at 1 and all cores, Paddle Lite x86 .nb, ONNX Runtime,
INT8 ONNX Runtime, the project's default path, PyTorch eager as a peer), training img/s against
PyTorch eager, reader cost in real training runs, and INT8 accuracy on the demo digits.

  python tools/benchmark.py --quick            # CI: < 2 min; numbers from every engine + agreement
  python tools/benchmark.py                    # everything (about 30-40 minutes on 2 cores)
  python tools/benchmark.py --sections inference --models v1_x1.0 --engines paddle-onednn,onnxruntime,default

Writes <out>/results.json, results.md (the tables docs/benchmarks.md shows) and results.png.
PyTorch is optional: pip install 'ppmobilenet[bench]'. Lite rows need the Lite interpreter
(tools/provision_lite.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppmobilenet.bench.cli import main  # noqa: E402  (imports no paddle)

if __name__ == "__main__":
    sys.exit(main(__doc__))
