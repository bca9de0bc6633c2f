"""An engine's own process (started by procs.py): its own peak memory (VmHWM) and the settings
that must precede a library's import. Standard library, numpy and ppmobilenet.board only: as a
script in Paddle Lite's interpreter it serves the Lite engine; `tools/benchmark.py --engine SPEC`
serves the others. Under paddle.distributed.launch every rank connects and gets every command.

Protocol, a JSON object a line: hello {"rank", "pid", "info", "env"}; then {"op": "prepare",
"batch", "warmup"}, {"op": "time", "n"} -> {"wall", "cpu"} seconds of n steps, {"op": "outputs",
"path"} (rank 0 saves what the agreement compares), {"op": "quit"} -> peak memory; or {"error"}.
"""
import json
import os
import socket
import sys
import time
import traceback

import numpy as np

# Started as a script, this folder is sys.path[0]; appended so the interpreter's own numpy wins.
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from ppmobilenet.board import lite_predictor, lite_run  # noqa: E402


def maxrss_kb():
    """Peak resident memory (VmHWM, KiB): fresh at exec, unlike ru_maxrss (kept from the parent)."""
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)


class Inference:
    """predict(array) -> array on the images of the inputs file (repeated to fill a batch)."""

    def __init__(self, predict, inputs, info, threads_for=None):
        with np.load(inputs) as f:
            self.x_all = np.ascontiguousarray(f["x"], dtype="float32")
        self.predict, self.info, self.threads_for = predict, info, threads_for

    def prepare(self, batch):
        self.x = np.ascontiguousarray(np.resize(self.x_all, (batch, *self.x_all.shape[1:])))
        return {"threads": self.threads_for(batch)} if self.threads_for else {}

    def step(self):
        return self.predict(self.x)

    def outputs(self):
        return self.predict(self.x_all)


class Training:
    """Steps on one fixed random batch (compute only: the reader is measured apart); make_step(x, y)
    -> a step returning the loss. `outputs`: the first two losses from the shared weights (the
    forward pass, then gradients and update; later ones drift apart on random labels)."""

    def __init__(self, make_step, spec, info):
        self.make_step, self.spec, self.info = make_step, spec, info

    def prepare(self, batch):  # once: the training section times one batch size
        rng = np.random.RandomState(0)
        x = rng.standard_normal([batch, *self.spec["image_shape"]]).astype("float32")
        y = rng.randint(0, self.spec["arch"]["class_num"], batch).astype("int64")
        self.step = self.make_step(x, y)
        self.losses = [self.step() for _ in range(2)]
        return {}

    def outputs(self):
        return np.asarray(self.losses, dtype="float64")


def _answer(engine, cmd, rank):
    if cmd["op"] == "prepare":
        out = engine.prepare(int(cmd["batch"]))
        for _ in range(int(cmd["warmup"])):
            engine.step()
        return out
    if cmd["op"] == "time":
        wall, cpu = [], []
        for _ in range(int(cmd["n"])):
            t, c = time.perf_counter(), time.process_time()
            engine.step()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return {"wall": wall, "cpu": cpu}
    if cmd["op"] == "outputs":
        if rank == 0:
            np.save(cmd["path"], np.asarray(engine.outputs()))
        return {}
    raise ValueError(f"unknown op {cmd['op']!r}")


def serve(spec, make_engine, base_rss_kb):
    """Connect to the benchmark, make the engine, answer its commands until it says quit."""
    host, port = spec["connect"].rsplit(":", 1)
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    stream = socket.create_connection((host, int(port))).makefile("rw")

    def reply(obj):
        stream.write(json.dumps(obj) + "\n")
        stream.flush()
    try:
        engine = make_engine()
    except Exception as e:  # the benchmark reports it against this engine, with this log
        traceback.print_exc()
        return reply({"error": f"loading: {type(e).__name__}: {e}"}) or 1
    reply({"rank": rank, "pid": os.getpid(), "info": dict(engine.info, paddle_loaded="paddle" in sys.modules),
           "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")}})
    for line in stream:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            return reply({"maxrss_kb": maxrss_kb(), "base_rss_kb": base_rss_kb}) or 0
        try:
            reply(_answer(engine, cmd, rank))
        except Exception as e:
            traceback.print_exc()
            reply({"error": f"{cmd['op']}: {type(e).__name__}: {e}"})
    return 1


def lite_engine(spec):
    """An x86 .nb in Paddle Lite's own runtime (one thread: its x86 Python API has no setting)."""
    predictor = lite_predictor(spec["path"])
    return Inference(lambda x: lite_run(predictor, x), spec["inputs"], {"backend": "lite"})


if __name__ == "__main__":  # in the Lite interpreter: no paddle
    base, SPEC = maxrss_kb(), json.loads(sys.argv[1])
    sys.exit(serve(SPEC, lambda: lite_engine(SPEC), base))
