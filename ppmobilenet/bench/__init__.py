"""The benchmark behind tools/benchmark.py (ppmobilenet.cli.benchmark): every engine in its own
process (procs.py starts and times it, worker.py serves it), built from the package's predictors
and training step (engines.py, onnx_engine.py) or the PyTorch peer (torch_peer.py); agreement,
the sections (sections.py, run.py), a report that knows no goal, and the goals (goals.py)."""
