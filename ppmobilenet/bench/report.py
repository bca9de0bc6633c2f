"""Results -> goal ratios, checks, a markdown report and a plot."""
import os

INFER_PEERS = ("onnxruntime-", "paddle-")  # "the best of ONNX Runtime and Paddle Inference"


def _tp(engine, batch):
    s = (engine.get("batches") or {}).get(str(batch))
    return s["throughput"] if s else None


def paired(a_round_ms, b_round_ms):
    """How much faster a is than b, round by round: both ran in every round, next to each other
    in time, so a burst of background load hits both. -> {"median", "lo", "hi"} of b_ms / a_ms
    over rounds (lo / hi: the quartiles from 4 rounds on, else the extremes), or None."""
    import statistics
    r = sorted(b / a for a, b in zip(a_round_ms or [], b_round_ms or []) if a > 0)
    if not r:
        return None
    lo, hi = (statistics.quantiles(r, n=4)[0::2] if len(r) >= 4 else (r[0], r[-1]))
    return {"median": statistics.median(r), "lo": lo, "hi": hi, "rounds": len(r)}


def _rounds(engine, batch):
    s = (engine.get("batches") or {}).get(str(batch))
    return s.get("round_ms") if s else None


def goals(results):
    """The issue's goals as measured ratios (>= 1.0 / >= 2.0 / <= 1 point / <= 5%)."""
    g = {"inference": [], "int8_speed": [], "training": [], "int8_accuracy": None, "reader": None}
    for m in results.get("inference", []):
        eng = m["engines"]
        for b in sorted({int(b) for e in eng.values() for b in e.get("batches", {})}):
            d = _tp(eng.get("default", {}), b)
            peers = {n: _tp(e, b) for n, e in eng.items() if n.startswith(INFER_PEERS)}
            peers = {n: v for n, v in peers.items() if v}
            if d and peers:
                best = max(peers, key=peers.get)
                row = {"model": m["model"], "size": m["size"], "batch": b, "default": d,
                       "default_backend": ((eng.get("default") or {}).get("engine") or {}).get("backend"),
                       "best_peer": best, "best_peer_tp": peers[best], "ratio": d / peers[best],
                       "goal": 1.0}
                # round by round against every peer; the default's own engine at the thread count
                # it chose (its twin) measures noise only, so the goal compares with the others
                dr = _rounds(eng["default"], b)
                used = (eng["default"]["batches"].get(str(b)) or {}).get("threads")
                twin = f"onnxruntime-{used}t" if row["default_backend"] == "onnx" and used else None
                pr = {n: paired(dr, _rounds(eng[n], b)) for n in peers}
                pr = {n: v for n, v in pr.items() if v}
                others = {n: v for n, v in pr.items() if n != twin}
                if others:
                    tough = min(others, key=lambda n: others[n]["median"])
                    row.update(paired_peer=tough, paired=others[tough])
                if twin in pr:
                    row.update(twin=twin, twin_paired=pr[twin])
                g["inference"].append(row)
        for n, e in eng.items():
            if n.startswith("int8-onnxruntime-"):
                fp = eng.get(n[len("int8-"):])
                for b in ("8",):
                    if fp and _tp(e, b) and _tp(fp, b):
                        g["int8_speed"].append({"model": m["model"], "size": m["size"],
                                                "batch": int(b), "engine": n[len("int8-"):],
                                                "int8": _tp(e, b), "fp32": _tp(fp, b),
                                                "ratio": _tp(e, b) / _tp(fp, b), "goal": 2.0})
    for t in results.get("training", []):
        eng = t["engines"]
        torch = eng.get("torch")
        if not torch:
            continue
        paddles = {n: e["throughput"] for n, e in eng.items() if n.startswith("paddle") and "@" not in n}
        torches = {n: e["throughput"] for n, e in eng.items() if n.startswith("torch")}
        if paddles:
            best = max(paddles, key=paddles.get)
            best_torch = max(torches, key=torches.get)
            g["training"].append({"case": t["label"], "size": t["size"], "batch": t["batch"],
                                  "torch": torch["throughput"], "best_paddle": best,
                                  "best_paddle_tp": paddles[best],
                                  "ratio": paddles[best] / torch["throughput"],
                                  "project_default": paddles.get("paddle") or 0,
                                  "project_default_ratio": (paddles.get("paddle") or 0) /
                                  torch["throughput"],
                                  # PyTorch given this project's malloc setting too
                                  "best_torch": best_torch, "best_torch_tp": torches[best_torch],
                                  "best_vs_best_ratio": paddles[best] / torches[best_torch],
                                  "paired": paired((eng.get("paddle") or {}).get("round_ms"),
                                                   torch.get("round_ms")),
                                  "goal": 1.0})
    g["int8_accuracy"] = [{"model": k, "fp32_top1": a["fp32_top1"], "int8_top1": a["int8_top1"],
                           "drop_points": a["drop_points"], "goal": 1.0}
                          for k, a in (results.get("int8_accuracy") or {}).items()]
    rd = results.get("reader")
    if rd:
        g["reader"] = {k: {"reader_share": v["reader_share"], "goal": 0.05}
                       for k, v in rd.items() if isinstance(v, dict) and "reader_share" in v}
    return g


def checks(results):
    """What --quick (and every run) verifies: each planned engine produced a number for every
    batch, and the engines agree. -> list of problems (empty when all is well)."""
    problems = []
    for m in results.get("inference", []):
        where = f"{m['model']}@{m['size']}"
        for name, err in m["errors"].items():
            problems.append(f"{where}: {err}")
        for name, e in m["engines"].items():
            for b in results["settings"]["batches"]:
                if not _tp(e, b):
                    problems.append(f"{where}: engine {name} has no throughput at batch {b}")
        for name, a in (m.get("agreement") or {}).items():
            if not a["ok"]:
                problems.append(f"{where}: engine {name} disagrees with {m['reference']}: "
                                + (a.get("error") or f"max abs diff {a['max_abs_diff']:.3g} > "
                                   f"{a['tol']:g}"))
        missing = [n for n in m["engines"] if n not in (m.get("agreement") or {})]
        for n in missing:
            problems.append(f"{where}: engine {n} gave no outputs to compare")
    for t in results.get("training", []):
        where = f"training {t['label']}"
        for name, err in t["errors"].items():
            problems.append(f"{where}: {err}")
        for name, e in t["engines"].items():
            if not e.get("throughput"):
                problems.append(f"{where}: engine {name} has no throughput")
        for name, a in (t.get("agreement") or {}).items():
            if not a["ok"]:
                problems.append(f"{where}: {name}'s first losses {a['losses']} differ from "
                                f"{t['reference']}'s by {a['max_rel_diff']:.2g} (relative) > {a['tol']:g}")
    return problems


# ---------------------------------------------------------------- markdown

def _f(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def _threads(name):
    tail = name.rsplit("-", 1)[-1]
    return tail[:-1] if tail.endswith("t") and tail[:-1].isdigit() else "-"


def markdown(results, plot_file=None):
    mc = results["machine"]
    lines = ["# ppmobilenet benchmark", "",
             f"- command: `{results['command']}`",
             f"- date: {mc['date']}",
             f"- machine: {mc['cpu_model']} ({mc['cpu_vendor']}), {mc['cores_available']} cores "
             f"available, {mc['memory_gib']} GiB, ISA {', '.join(mc['isa'])}"
             + (f", hypervisor {mc['hypervisor']}" if mc.get("hypervisor") else ""),
             f"- load average at start / end: {_load(mc.get('load_average_start'))} / "
             f"{_load(results.get('load_average_end'))} (other processes share the machine)",
             f"- versions: " + ", ".join(f"{k} {v}" for k, v in mc["versions"].items() if v),
             f"- GPU: {mc.get('gpu') or 'none'}",
             f"- timing: {results['settings']['rounds']} interleaved rounds per batch size after "
             f"warm-up; figures are medians over rounds; peak memory is the high-water RSS (VmHWM) of the engine's "
             f"own process (fresh per engine, load + all runs)", ""]
    g = results.get("goals") or {}
    lines += _goal_table(g)
    if plot_file:
        lines += [f"![throughput]({os.path.basename(plot_file)})", ""]
    for m in results.get("inference", []):
        lines += _inference_table(m)
    for t in results.get("training", []):
        lines += _training_table(t)
    if results.get("reader"):
        lines += ["## Data pipeline: reader cost / batch cost (engine log)", "",
                  "| run | windows | mean batch cost s | mean reader cost s | reader share | "
                  "after 1st window | img/s |", "|---|---|---|---|---|---|---|"]
        for k, v in results["reader"].items():
            if isinstance(v, dict) and "reader_share" in v:
                lines.append(f"| {k} | {v['windows']} | {v['mean_batch_cost_s']:.4f} | "
                             f"{v['mean_reader_cost_s']:.4f} | {100 * v['reader_share']:.2f}% | "
                             f"{100 * v['reader_share_after_first_window']:.2f}% | {v['ips']:.1f} |")
        lines.append("")
    accs = results.get("int8_accuracy") or {}
    if accs:
        lines += ["## INT8 accuracy (models trained on the demo digits, 64x64, validation split)", ""]
    for key, acc in accs.items():
        a = acc["arch"]
        lines.append(f"- {key} (MobileNetV1 x{a['scale']}): ONNX Runtime QDQ INT8, "
                     f"{acc['calibration_images']} calibration images: top-1 fp32 "
                     f"{100 * acc['fp32_top1']:.2f}% -> int8 {100 * acc['int8_top1']:.2f}% (drop "
                     f"{acc['drop_points']:.2f} points, {acc['val_images']} images); ONNX model "
                     f"{acc['fp32_onnx_bytes']} -> {acc['int8_onnx_bytes']} bytes")
        if acc.get("lite"):
            li = acc["lite"]
            lines.append(f"- {key}: Paddle Lite opt QUANT_INT8 (weights only, arm): .nb "
                         f"{li['fp32_arm_nb_bytes']} -> {li['int8_arm_nb_bytes']} bytes; top-1 "
                         f"with int8-rounded weights {100 * li['int8_weights_top1_emulated']:.2f}% "
                         f"(emulated: Lite's x86 runtime cannot run a weight-quantised .nb)")
        elif acc.get("lite_error"):
            lines.append(f"- {key}: Lite weight quantization failed: {acc['lite_error']}")
    if accs:
        lines.append("")
    for p in results.get("problems", []):
        lines.append(f"- PROBLEM: {p}")
    return "\n".join(lines) + "\n"


def _load(v):
    return "-" if not v else " ".join(f"{x:.2f}" for x in v)


def _goal_table(g):
    out = []
    if g.get("inference"):
        out += ["## Goal: the default inference path >= the best of ONNX Runtime and Paddle Inference",
                "", "Ratios > 1: the default is faster. Per round: the median (and quartiles) of the "
                "ratios of rounds that ran next to each other; the twin is the default's own engine "
                "at the thread count it chose, so its ratio is noise.", "",
                "| case | default img/s | best peer, medians | per round vs the best other engine | "
                "per round vs the twin (noise) |", "|---|---|---|---|---|"]
        for r in g["inference"]:
            out.append(f"| {r['model']} {r['size']}px b{r['batch']} | {r['default']:.1f} "
                       f"({r.get('default_backend') or '?'}) | {r['best_peer']} {r['best_peer_tp']:.1f}: "
                       f"{r['ratio']:.2f}x | {_paired_cell(r.get('paired'), r.get('paired_peer'))} | "
                       f"{_paired_cell(r.get('twin_paired'), r.get('twin'))} |")
        out.append("")
    if g.get("int8_speed") or g.get("int8_accuracy") or g.get("training") or g.get("reader"):
        out += ["## INT8, training and data pipeline goals", "",
                "| goal | case | measured | ratio | target |", "|---|---|---|---|---|"]
    if g.get("int8_speed"):
        for r in g["int8_speed"]:
            out.append(f"| INT8 vs fp32, same engine | {r['model']} {r['size']}px b{r['batch']} "
                       f"{r['engine']} | {r['int8']:.1f} vs {r['fp32']:.1f} img/s | "
                       f"{r['ratio']:.2f}x | >= 2.0 |")
    for r in g.get("int8_accuracy") or []:
        out.append(f"| INT8 top-1 drop | {r['model']}, demo val split | {100 * r['fp32_top1']:.2f}% "
                   f"-> {100 * r['int8_top1']:.2f}% | {r['drop_points']:.2f} points | <= 1.0 |")
    for r in g.get("training") or []:
        out.append(f"| training vs PyTorch eager | {r['case']} {r['size']}px b{r['batch']} | "
                   f"paddle (tools/train.py) {r['project_default']:.2f} vs torch {r['torch']:.2f} "
                   f"img/s | {r['project_default_ratio']:.2f}x{_paired_text(r.get('paired'), 'torch')} "
                   f"| >= 1.0 |")
        if (r["best_paddle"], r["best_torch"]) != ("paddle", "torch"):
            out.append(f"| training, best of each | {r['case']} {r['size']}px b{r['batch']} | "
                       f"{r['best_paddle']} {r['best_paddle_tp']:.2f} vs {r['best_torch']} "
                       f"{r['best_torch_tp']:.2f} img/s | {r['best_vs_best_ratio']:.2f}x | - |")
    for k, v in (g.get("reader") or {}).items():
        out.append(f"| reader cost / batch cost | {k} run | {100 * v['reader_share']:.2f}% | - | <= 5% |")
    return out + [""] if out else []


def _paired_text(p, peer):
    return f"; per round vs {peer}: {_paired_cell(p)}" if p else ""


def _paired_cell(p, peer=None):
    if not p:
        return "-"
    return f"{peer + ': ' if peer else ''}{p['median']:.2f}x ({p['lo']:.2f}-{p['hi']:.2f}, {p['rounds']} rounds)"


def _inference_table(m):
    a = m.get("arch", {})
    title = f"{a.get('name')} x{a.get('scale')}" + (f" {a['head']} head" if a.get("head") else "")
    batches = sorted({int(b) for e in m["engines"].values() for b in e.get("batches", {})})
    head = "| engine | threads | " + " | ".join(f"b{b} ms | b{b} img/s" for b in batches) + \
        " | peak RSS MiB | max abs diff vs " + str(m.get("reference")) + " |"
    out = [f"## Inference: {title} ({m['model']}), {m['size']}x{m['size']}", "", head,
           "|" + "---|" * (3 + 2 * len(batches) + 1)]
    for name, e in m["engines"].items():
        cells = []
        for b in batches:
            s = e["batches"].get(str(b))
            cells += [_f(s and s["latency_ms"], "{:.2f}"), _f(s and s["throughput"])]
        ag = (m.get("agreement") or {}).get(name, {})
        label = name
        if name == "default" and (e.get("engine") or {}).get("backend"):
            label = f"default ({e['engine']['backend']})"
        threads = _threads(name) if name != "default" else \
            (e.get("engine") or {}).get("threads") or (e.get("env") or {}).get("OMP_NUM_THREADS") or "-"
        out.append(f"| {label} | {threads} | "
                   + " | ".join(cells) + f" | {_f((e.get('memory') or {}).get('peak_rss_mib'), '{:.0f}')} | "
                   + (f"{ag['max_abs_diff']:.1e}" if "max_abs_diff" in ag else "-") + " |")
    for name, why in m["skipped"].items():
        out.append(f"| {name} | - | skipped: {why} |")
    for name, err in m["errors"].items():
        out.append(f"| {name} | - | FAILED: {err.splitlines()[0]} |")
    return out + [""]


def _training_table(t):
    a = t["arch"]
    out = [f"## Training: {a['name']} x{a.get('scale')} ({t['label']}), {t['size']}x{t['size']}, "
           f"batch {t['batch']}", "",
           "| engine | img/s | s/step | CPU s/step | peak RSS MiB | first losses | rel. diff vs "
           f"{t.get('reference')} |", "|---|---|---|---|---|---|---|"]
    for name, e in t["engines"].items():
        ag = (t.get("agreement") or {}).get(name.split("@")[0], {})
        losses = ", ".join(f"{v:.4f}" for v in ag.get("losses", []))
        out.append(f"| {name} | {e['throughput']:.2f} | {e['latency_ms'] / 1000:.2f} | "
                   f"{e['cpu_ms'] / 1000:.2f} | {_f((e.get('memory') or {}).get('peak_rss_mib'), '{:.0f}')} | "
                   f"{losses or '-'} | {_f(ag.get('max_rel_diff'), '{:.1e}')} |")
    for name, why in t["skipped"].items():
        out.append(f"| {name} | skipped: {why} |")
    for name, err in t["errors"].items():
        out.append(f"| {name} | FAILED: {err.splitlines()[0]} |")
    return out + [""]


# ---------------------------------------------------------------- plot

def plot(results, path, log=print):
    """Throughput per engine (batch 1 and 8) for each model; skipped without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot: matplotlib is not installed; skipping the PNG (pip install matplotlib)")
        return None
    models = results.get("inference", [])
    if not models:
        return None
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 2.2 + 0.32 * max(
        len(m["engines"]) for m in models) * len(models)), squeeze=False)
    for ax, m in zip(axes[:, 0], models):
        names = list(m["engines"])
        batches = sorted({int(b) for e in m["engines"].values() for b in e.get("batches", {})})
        h = 0.8 / max(1, len(batches))
        for i, b in enumerate(batches):
            vals = [_tp(m["engines"][n], b) or 0 for n in names]
            ax.barh([k + i * h for k in range(len(names))], vals, height=h, label=f"batch {b}")
        ax.set_yticks([k + h * (len(batches) - 1) / 2 for k in range(len(names))])
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{m['model']} {m['size']}x{m['size']}", fontsize=9)
        ax.set_xlabel("images / s", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
