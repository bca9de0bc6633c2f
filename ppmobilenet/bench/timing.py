"""Side-by-side timing: every engine warms up, then the engines take turns, round after round,
each round a few iterations; an engine's figure is the median over its rounds. Interleaving
spreads the noise of a shared machine over all engines alike; the order rotates each round, and
a pause after each turn lets OpenMP threads stop spinning (Intel's spin 200 ms) before the next."""
import statistics
import time

from .procs import BenchError


def interleave(workers, batch, rounds, warmup, target_s, gap_s, log=print):
    """workers: {name: procs.Worker}. -> ({name: stats}, {name: error}); an engine that fails is
    dropped from the remaining rounds, the others go on."""
    errors, n_iter, threads = {}, {}, {}
    for name, w in workers.items():
        try:  # warm up, then time one iteration to pick how many make a round of target_s
            threads[name] = w.call("prepare", batch=batch, warmup=warmup)[0].get("threads")
            n_iter[name] = max(1, min(50, round(target_s / max(w.call("time", n=1)[0]["wall"][0], 1e-6))))
        except BenchError as e:
            errors[name] = str(e)
    walls, cpus = {n: [] for n in n_iter}, {n: [] for n in n_iter}
    for r in range(rounds):
        names = list(n_iter)[r % max(1, len(n_iter)):] + list(n_iter)[:r % max(1, len(n_iter))]
        for name in [n for n in names if n not in errors]:
            try:
                res = workers[name].call("time", n=n_iter[name])[0]
            except BenchError as e:
                errors[name] = str(e)
                continue
            walls[name].append(statistics.mean(res["wall"]))
            cpus[name].append(statistics.mean(res["cpu"]))
            time.sleep(gap_s)
        log(f"  round {r + 1}/{rounds} done")
    stats = {}
    for n in [n for n in n_iter if n not in errors and walls[n]]:
        med = statistics.median(walls[n])
        stats[n] = {"batch": batch, "rounds": len(walls[n]), "latency_ms": 1000.0 * med,  # median of rounds
                    "throughput": batch / med, "cpu_ms": 1000.0 * statistics.median(cpus[n]),
                    "spread": (max(walls[n]) - min(walls[n])) / med,
                    "round_ms": [1000.0 * v for v in walls[n]]}
        if threads.get(n):
            stats[n]["threads"] = threads[n]
    return stats, errors
