"""The benchmark's end of worker.py: start an engine's process (data parallel: a
paddle.distributed.launch of one process per rank), talk to it over a local socket, time the
engines side by side. Every error message carries the end of the engine's log."""
import json
import os
import signal
import socket
import statistics
import subprocess
import time

from ppmobilenet.errors import PPMobileNetError

# Set per engine by its spec, never inherited from the shell that runs the benchmark.
CONTROLLED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "FLAGS_use_mkldnn",
                  "ONEDNN_VERBOSE", "DNNL_VERBOSE")


class BenchError(PPMobileNetError):
    """An engine failed: the message names it and carries the end of its log."""


class Worker:
    def __init__(self, name, spec, cmd, env, log_dir, ranks=1, timeout=600):
        self.name, self.ranks, self.timeout, self.ranks_io = name, ranks, timeout, []
        self.server = socket.create_server(("127.0.0.1", 0))
        spec = dict(spec, connect="127.0.0.1:%d" % self.server.getsockname()[1])
        env = dict({k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV},
                   **{k: str(v) for k, v in env.items()})
        os.makedirs(log_dir, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        self.log_path = os.path.join(log_dir, safe + ".log")
        with open(self.log_path, "w") as log:  # its own session: kill() takes a launcher's ranks too
            self.proc = subprocess.Popen(cmd + [json.dumps(spec)], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _fail(self, message):
        with open(self.log_path, errors="replace") as f:
            tail = [line.rstrip() for line in f if line.strip()][-15:]
        raise BenchError(f"engine {self.name}: {message}" + (
            f"\n  its log ({self.log_path}):\n    " + "\n    ".join(tail) if tail else ""))

    def _read(self, stream, what):
        try:
            line = stream.readline()
        except socket.timeout:
            self.kill()
            self._fail(f"{what}: no answer in {self.timeout} s")
        if not line:  # the process closed the connection: it ended or is ending
            time.sleep(0.5)
            self._fail(f"{what}: the process ended (exit code {self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            self._fail(reply["error"])
        return reply

    def wait_ready(self):
        """Every rank connected and loaded -> rank 0's hello (engine info, thread settings)."""
        deadline = time.time() + self.timeout
        self.server.settimeout(1.0)
        while len(self.ranks_io) < self.ranks:
            try:
                conn = self.server.accept()[0]
            except socket.timeout:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.kill()
                    self._fail(f"loading: no connection (exit code {self.proc.returncode})")
                continue
            conn.settimeout(self.timeout)
            self.ranks_io.append(conn.makefile("rw"))
        hellos = [self._read(s, "loading") for s in self.ranks_io]
        order = sorted(range(self.ranks), key=lambda i: hellos[i]["rank"])
        self.ranks_io, self.info = [self.ranks_io[i] for i in order], hellos[order[0]]
        return self.info

    def call(self, op, **kw):
        """Send to every rank, wait for all -> their replies, rank 0's first."""
        for s in self.ranks_io:
            s.write(json.dumps(dict(op=op, **kw)) + "\n")
            s.flush()
        return [self._read(s, op) for s in self.ranks_io]

    def close(self):
        """-> the peak memory of the process (data parallel: summed over the ranks); then it is gone."""
        try:
            ranks = self.call("quit")
            self.proc.wait(timeout=60)
        finally:
            self.kill()
        mem = {"peak_rss_mib": sum(r["maxrss_kb"] for r in ranks) / 1024,
               "start_rss_mib": ranks[0]["base_rss_kb"] / 1024}
        return dict(mem, rank0_peak_rss_mib=ranks[0]["maxrss_kb"] / 1024) if len(ranks) > 1 else mem

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for s in self.ranks_io:
            s.close()
        self.server.close()


def _each(workers, errors, call, order=None):
    """{name: call(worker)} for the engines (in `order`); one that fails is stopped and dropped
    from workers, its error recorded in errors."""
    done = {}
    for name in list(order or workers):
        try:
            done[name] = call(workers[name])
        except BenchError as e:
            errors[name] = str(e)
            workers.pop(name).kill()
    return done


def interleave(workers, batch, errors, rounds, warmup, target_s, gap_s, log=print):
    """Warm-up, then the engines take turns, round after round (about target_s each), a figure
    being the median over rounds: a shared machine's noise hits all alike. The order rotates; a
    pause after each turn lets OpenMP threads stop spinning (Intel's: 200 ms). -> {name: stats};
    a failed engine drops out (_each)."""
    def prepare(w):  # -> (its thread count if it picks one per batch: the default path), steps a turn
        threads = w.call("prepare", batch=batch, warmup=warmup)[0].get("threads")
        return threads, max(1, min(50, round(target_s / max(w.call("time", n=1)[0]["wall"][0], 1e-6))))
    setup = _each(workers, errors, prepare)
    walls, cpus = {n: [] for n in workers}, {n: [] for n in workers}

    def turn(w):
        res = w.call("time", n=setup[w.name][1])[0]
        walls[w.name].append(statistics.mean(res["wall"]))
        cpus[w.name].append(statistics.mean(res["cpu"]))
        time.sleep(gap_s)
    for r in range(rounds):
        names, k = list(workers), r % max(1, len(workers))
        _each(workers, errors, turn, names[k:] + names[:k])
        log(f"  round {r + 1}/{rounds} done")
    stats = {}
    for n in [n for n in workers if walls[n]]:
        med = statistics.median(walls[n])
        stats[n] = {"batch": batch, "rounds": len(walls[n]), "latency_ms": 1000.0 * med,
                    "throughput": batch / med, "cpu_ms": 1000.0 * statistics.median(cpus[n]),
                    "spread": (max(walls[n]) - min(walls[n])) / med, "round_ms": [1000.0 * v for v in walls[n]]}
        if setup[n][0]:
            stats[n]["threads"] = setup[n][0]
    return stats


def measure(engines, batches, timing, log_dir, log):
    """Start the engines at once (their imports overlap), time them at each batch, collect their
    outputs and peak memory. -> ({name: {"batches", "memory", "engine", "env"}}, {name: outputs
    file}, {name: error}); an engine that fails drops out, its error kept."""
    workers = {name: Worker(name, spec, cmd, env, log_dir, ranks) for name, spec, cmd, env, ranks in engines}
    results, errors = {}, {}
    try:
        _each(workers, errors, Worker.wait_ready)
        for batch in batches:
            log(f"  batch {batch}: {len(workers)} engines, {timing['rounds']} interleaved rounds")
            for name, st in interleave(workers, batch, errors, log=log, **timing).items():
                results.setdefault(name, {"batches": {}})["batches"][str(batch)] = st
        npy = {n: os.path.join(log_dir, f"{n}.npy") for n in workers}
        saved = _each(workers, errors, lambda w: w.call("outputs", path=npy[w.name]))
    finally:
        for name, w in workers.items():
            try:
                memory = w.close()
            except BenchError:
                continue
            if name in results:
                results[name].update(memory=memory, engine=w.info["info"], env=w.info["env"])
    return results, {n: npy[n] for n in saved}, errors
