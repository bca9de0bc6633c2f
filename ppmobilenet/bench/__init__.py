"""The benchmark behind tools/benchmark.py: every engine in its own process (worker.py), timed
side by side in interleaved rounds (timing.py), with peak memory, output agreement, INT8
quantization (int8.py), the PyTorch peer (torch_peer.py) and the report (report.py).

Importing this package imports no paddle: tools/benchmark.py sets the CPU environment first.
"""
