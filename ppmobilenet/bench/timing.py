"""Side-by-side timing: every engine warms up, then the engines take turns, round after round,
each round a few iterations; an engine's figure is the median over its rounds.

Interleaving spreads the noise of a shared machine (other processes, frequency changes) over all
engines alike; the turn order rotates each round so no engine always follows the same one. A
short pause after each turn lets the previous engine's OpenMP threads stop spinning (Intel's
OpenMP spins 200 ms after a parallel region) before the next engine starts.
"""
import statistics
import time

from .procs import BenchError


def calibrate(worker, batch, warmup, target_s):
    """Warm up, then time one iteration to pick how many iterations make one round.
    -> (iterations, what the engine said when it prepared: e.g. the default's thread count)"""
    prepared = worker.call("prepare", batch=batch, warmup=warmup)
    one = worker.call("time", n=1)["wall"][0]
    return max(1, min(50, int(round(target_s / max(one, 1e-6))))), prepared


def summarize(batch, rounds_wall, rounds_cpu, per_iter):
    """rounds_wall: the mean seconds per iteration of each round."""
    med = statistics.median(rounds_wall)
    q = sorted(rounds_wall)
    return {
        "batch": batch,
        "rounds": len(rounds_wall),
        "iters": len(per_iter),
        "latency_ms": 1000.0 * med,                       # median over rounds of the round mean
        "latency_p50_ms": 1000.0 * statistics.median(per_iter),
        "latency_min_ms": 1000.0 * min(per_iter),
        "throughput": batch / med,                        # images per second
        "cpu_ms": 1000.0 * statistics.median(rounds_cpu),  # process CPU time per iteration
        "spread": (q[-1] - q[0]) / med if med > 0 else 0.0,  # (max - min) / median of rounds
        "round_ms": [1000.0 * r for r in rounds_wall],
    }


def interleave(workers, batch, rounds=5, warmup=2, target_s=0.4, gap_s=0.25, log=print):
    """workers: {name: procs.Worker}. -> ({name: stats}, {name: error message}).
    An engine that fails is dropped from the remaining rounds; the others go on."""
    errors, n_iter, threads = {}, {}, {}
    for name, w in workers.items():
        try:
            n_iter[name], prepared = calibrate(w, batch, warmup, target_s)
            if prepared.get("threads"):
                threads[name] = prepared["threads"]
        except BenchError as e:
            errors[name] = str(e)
    names = [n for n in workers if n in n_iter]
    walls = {n: [] for n in names}
    cpus = {n: [] for n in names}
    iters = {n: [] for n in names}
    for r in range(rounds):
        k = r % max(1, len(names))
        for name in names[k:] + names[:k]:
            if name in errors:
                continue
            try:
                res = workers[name].call("time", n=n_iter[name])
            except BenchError as e:
                errors[name] = str(e)
                continue
            walls[name].append(sum(res["wall"]) / len(res["wall"]))
            cpus[name].append(sum(res["cpu"]) / len(res["cpu"]))
            iters[name].extend(res["wall"])
            if gap_s:
                time.sleep(gap_s)
        log(f"  round {r + 1}/{rounds} done")
    stats = {n: dict(summarize(batch, walls[n], cpus[n], iters[n]),
                     **({"threads": threads[n]} if n in threads else {}))
             for n in names if n not in errors and walls[n]}
    return stats, errors
