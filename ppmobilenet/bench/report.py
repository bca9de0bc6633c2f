"""Results -> checks, paired ratios and a markdown report. Knows no goal (goals.py)."""
import statistics


def stats(engine, batch):
    return (engine.get("batches") or {}).get(str(batch))


def paired(a_round_ms, b_round_ms):
    """How much faster a is than b, round by round: both ran in every round, next to each other
    in time, so a burst of background load hits both. -> {"median", "lo", "hi", "rounds"} of
    b_ms / a_ms over rounds (lo / hi: the quartiles from 4 rounds on, else the extremes), or None."""
    r = sorted(b / a for a, b in zip(a_round_ms or [], b_round_ms or []) if a > 0)
    if not r:
        return None
    lo, hi = statistics.quantiles(r, n=4)[0::2] if len(r) >= 4 else (r[0], r[-1])
    return {"median": statistics.median(r), "lo": lo, "hi": hi, "rounds": len(r)}


def checks(results):
    """What --quick (and every run) verifies: each planned engine produced a number for every
    batch, and the engines agree. -> list of problems (empty when all is well)."""
    problems = []
    for r in (results.get("inference") or []) + (results.get("training") or []):
        where = f"{r['model']}@{r['size']}" + (f", training b{r['batch']}" if "batch" in r else "")
        problems += [f"{where}: {err}" for err in r["errors"].values()]
        for name, e in r["engines"].items():
            problems += [f"{where}: engine {name} has no throughput at batch {b}"
                         for b in r["batches"] if not stats(e, b)]
            a = (r.get("agreement") or {}).get(name.split("@")[0])
            if a is None:
                problems.append(f"{where}: engine {name} gave no outputs to compare")
            elif not a["ok"]:
                problems.append(f"{where}: engine {name} disagrees with {r['reference']}: {a['why']}")
    return problems


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def table(head, rows):
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def _arch(a):
    return f"{a['name']} x{a.get('scale')}" + (f" {a['head']} head" if a.get("head") else "")


def engine_table(r):
    """One row per engine: threads, ms, img/s and CPU ms per batch, peak RSS, agreement."""
    rows = []
    for name, e in r["engines"].items():
        info, ag = e.get("engine") or {}, (r.get("agreement") or {}).get(name.split("@")[0], {})
        cells = [_f(s.get(k)) for b in r["batches"] for s in [stats(e, b) or {}]
                 for k in ("latency_ms", "throughput", "cpu_ms")]
        agree = ", ".join(f"{v:.4f}" for v in ag["losses"]) + f" ({ag['max_rel_diff']:.1e})" \
            if "losses" in ag else _f(ag.get("max_abs_diff"), "{:.1e}")
        rows.append([f"default ({info['backend']})" if name == "default" else name,
                     info.get("threads") or (e.get("env") or {}).get("OMP_NUM_THREADS") or "-", *cells,
                     _f((e.get("memory") or {}).get("peak_rss_mib"), "{:.0f}"), agree])
    per_batch = [c for b in r["batches"] for c in (f"b{b} ms", f"b{b} img/s", f"b{b} CPU ms")]
    head = ["engine", "threads", *per_batch, "peak RSS MiB", f"vs {r.get('reference')}: "
            + ("first losses (rel. diff)" if "batch" in r else "max abs diff")]
    return table(head, rows + [[n, "-", f"skipped: {why}"] for n, why in r["skipped"].items()]
                 + [[n, "-", f"FAILED: {err.splitlines()[0]}"] for n, err in r["errors"].items()])


def markdown(results, goal_lines=()):
    mc = results["machine"]
    load = lambda v: " ".join(f"{x:.2f}" for x in v or []) or "-"  # noqa: E731
    lines = ["# ppmobilenet benchmark", "", f"- command: `{results['command']}`", f"- date: {mc['date']}",
             f"- machine: {mc['cpu_model']} ({mc['cpu_vendor']}), {mc['cores_available']} cores available, "
             f"{mc['memory_gib']} GiB, ISA {', '.join(mc['isa'])}"
             + (f", hypervisor {mc['hypervisor']}" if mc["hypervisor"] else ""),
             f"- load average at start / end: {load(mc['load_average_start'])} / "
             f"{load(results.get('load_average_end'))} (other processes share the machine)",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in mc["versions"].items() if v),
             f"- GPU: {mc['gpu'] or 'none'}",
             f"- timing: {results['settings']['rounds']} interleaved rounds per batch size after warm-up; "
             "figures are medians over rounds; peak memory is the high-water RSS (VmHWM) of the engine's "
             "own process (fresh per engine, load + all runs; summed over the ranks of data parallel)", ""]
    lines += list(goal_lines)
    for r in results.get("inference") or []:
        lines += [f"## Inference: {_arch(r['arch'])} ({r['model']}), {r['size']}x{r['size']}", ""] + engine_table(r)
    for r in results.get("training") or []:
        lines += [f"## Training: {_arch(r['arch'])} ({r['model']}), {r['size']}x{r['size']}, "
                  f"batch {r['batch']}", ""] + engine_table(r)
    runs = {k: v for k, v in (results.get("reader") or {}).items() if "reader_share" in v}
    if runs:
        lines += ["## Data pipeline: reader cost / batch cost (engine log)", ""] + table(
            ["run", "windows", "mean batch cost s", "mean reader cost s", "reader share", "after 1st window", "img/s"],
            [[k, v["windows"], _f(v["mean_batch_cost_s"], "{:.4f}"), _f(v["mean_reader_cost_s"], "{:.4f}"),
              f"{100 * v['reader_share']:.2f}%", f"{100 * v['reader_share_after_first_window']:.2f}%",
              _f(v["ips"], "{:.1f}")] for k, v in runs.items()])
    if results.get("int8_accuracy"):
        lines += ["## INT8 accuracy (models trained on the demo digits, 64x64, validation split)", "",
                  "ONNX Runtime QDQ INT8; Paddle Lite opt QUANT_INT8 (weights only, arm), its top-1 "
                  "emulated with the weights rounded as Lite rounds them (Lite's x86 runtime cannot run "
                  "a weight-quantised .nb).", ""]
        lines += table(["model", "calibration images", "val images", "fp32 top-1", "int8 top-1", "drop, points",
                        "ONNX bytes fp32 -> int8", "Lite arm .nb bytes fp32 -> int8", "Lite int8 weights top-1"],
                       [_int8_row(k, a) for k, a in results["int8_accuracy"].items()])
    return "\n".join(lines + [f"- PROBLEM: {p}" for p in results.get("problems", [])]) + "\n"


def _int8_row(key, a):
    li = a.get("lite")
    return [f"{key} ({_arch(a['arch'])})", a["calibration_images"], a["val_images"],
            f"{100 * a['fp32_top1']:.2f}%", f"{100 * a['int8_top1']:.2f}%", _f(a["drop_points"]),
            f"{a['fp32_onnx_bytes']} -> {a['int8_onnx_bytes']}",
            f"{li['fp32_arm_nb_bytes']} -> {li['int8_arm_nb_bytes']}" if li else a.get("lite_error", "-"),
            f"{100 * li['int8_weights_top1_emulated']:.2f}%" if li else "-"]
