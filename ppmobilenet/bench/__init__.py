"""The benchmark behind tools/benchmark.py (ppmobilenet.cli.benchmark): every engine in its own
process (procs.py starts it, worker.py runs it), built from the package's own predictors and
training step (engines.py) or the PyTorch peer (torch_peer.py); side-by-side rounds (timing.py),
agreement, the sections (sections.py, run.py) and the report of the goals in specs.py."""
