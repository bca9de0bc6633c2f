"""The goals of issues 4, 11 and 13, measured on a run's results (the report itself knows none):
subject vs peers per model, batch and thread count (best peer by medians; round by round the
toughest peer, and the subject's twin, its own engine at its own thread count, whose ratio is the
noise); single values against a target; how close each training engine is to the machine's
limit (fp32 GEMM throughput, measured at the start of the training section)."""
import re

from .report import paired, stats, table

RATIO_GOALS = (  # {t} in subject and peers binds one thread count; * is any text
    {"goal": "default inference path >= the best of ONNX Runtime and Paddle Inference",
     "section": "inference", "subject": "default", "peers": ("onnxruntime-*", "paddle-*"),
     "twin": {"onnx": "onnxruntime-{threads}t", "paddle": "paddle-onednn-{threads}t"},
     "target": ">= 1.0"},
    {"goal": "INT8 vs fp32, same engine", "section": "inference", "batches": (8,),
     "subject": "int8-onnxruntime-{t}t", "peers": ("onnxruntime-{t}t",), "target": ">= 2.0"},
    {"goal": "training: tools/train.py vs PyTorch eager, same malloc setting",
     "section": "training", "subject": "paddle", "peers": ("torch+keep-mem",), "target": ">= 1.0"},
    {"goal": "training: one process per core vs PyTorch eager, same malloc setting",
     "section": "training", "subject": "paddle+dp", "peers": ("torch+keep-mem",)},
    {"goal": "training: tools/train.py vs PyTorch eager as installed", "section": "training",
     "subject": "paddle", "peers": ("torch",)},
)
# (goal, results section, value, scale shown, target)
VALUE_GOALS = (
    ("INT8 top-1 drop on the demo validation split, points", "int8_accuracy", "drop_points", 1, "<= 1.0"),
    ("reader cost / batch cost, %", "reader", "reader_share", 100, "<= 5"),
)
TRAIN_FLOPS_PER_MAC = 6  # forward (2 FLOPs a MAC) + backward (twice the forward): ~3.4 GFLOP for V1 x1.0


def _pattern(name):
    return re.compile(re.escape(name).replace(r"\*", ".*").replace(r"\{t\}", r"(?P<t>\d+)") + "$")


def _ratio_rows(goal, case, engines, batch):
    rows = []
    for name, e in engines.items():
        m, s = _pattern(goal["subject"]).match(name), stats(e, batch)
        bound = [_pattern(p.replace("{t}", (m and m.groupdict().get("t")) or "{t}")) for p in goal["peers"]]
        peers = {n: stats(p, batch) for n, p in engines.items()
                 if n != name and stats(p, batch) and any(r.match(n) for r in bound)}
        if not (m and s and peers):
            continue
        best = max(peers, key=lambda n: peers[n]["throughput"])
        backend = (e.get("engine") or {}).get("backend")
        twin = (goal.get("twin") or {}).get(backend, "").format(threads=s.get("threads"))
        per_round = {n: paired(s["round_ms"], p["round_ms"]) for n, p in peers.items()}
        others = {n: v for n, v in per_round.items() if v and n != twin}
        row = {"goal": goal["goal"], "case": case, "target": goal.get("target"), "subject": name,
               "subject_tp": s["throughput"], "backend": backend, "best_peer": best,
               "best_peer_tp": peers[best]["throughput"], "ratio": s["throughput"] / peers[best]["throughput"]}
        if others:
            tough = min(others, key=lambda n: others[n]["median"])
            row.update(paired_peer=tough, paired=others[tough])
        if per_round.get(twin):
            row.update(twin=twin, twin_paired=per_round[twin])
        rows.append(row)
    return rows


def goals(results):
    """-> {"ratios": [a row per goal, model, batch and thread count], "values": [per goal and run],
    "limits": [per training engine: GFLOP/s and its share of the machine's fp32 GEMM]}."""
    ratios = [row for goal in RATIO_GOALS for r in results.get(goal["section"]) or [] for b in r["batches"]
              if b in goal.get("batches", (b,))
              for row in _ratio_rows(goal, f"{r['model']} {r['size']}px b{b}", r["engines"], b)]
    values = [{"goal": goal, "case": k, "value": scale * v[key], "target": target}
              for goal, section, key, scale, target in VALUE_GOALS
              for k, v in (results.get(section) or {}).items() if key in v]
    gemm, limits = (results.get("machine") or {}).get("gemm_gflops"), []
    for r in results.get("training") or []:
        gflop = TRAIN_FLOPS_PER_MAC * r.get("macs_per_image", 0) / 1e9
        for name, e in r["engines"].items():
            s = stats(e, r["batch"])
            if s and gflop:
                limits.append({"case": f"{r['model']} {r['size']}px b{r['batch']}", "engine": name,
                               "img_s": s["throughput"], "gflop_per_image": gflop,
                               "gflops": s["throughput"] * gflop,
                               "of_gemm": s["throughput"] * gflop / gemm if gemm else None})
    return {"ratios": ratios, "values": values, "limits": limits, "gemm_gflops": gemm}


def _paired(p, peer=None):
    return "-" if not p else (f"{peer}: " if peer else "") + \
        f"{p['median']:.2f}x ({p['lo']:.2f}-{p['hi']:.2f}, {p['rounds']} rounds)"


def markdown(g):
    """The goals' tables (results.md, and the end of the run's output)."""
    lines = []
    if g.get("ratios"):
        lines += ["## Goals: ratios", "", "Ratios > 1: the subject is faster. Per round: the median "
                  "(quartiles) of the ratios of rounds run next to each other, against the toughest peer; "
                  "the twin is the subject's own engine at its own thread count: its ratio is the noise.", ""]
        lines += table(["goal", "case", "subject img/s", "best peer, medians", "per round",
                        "per round vs the twin (noise)", "target"],
                       [[r["goal"], r["case"],
                         f"{r['subject_tp']:.1f}" + (f" ({r['backend']})" if r["backend"] else ""),
                         f"{r['best_peer']} {r['best_peer_tp']:.1f}: {r['ratio']:.2f}x",
                         _paired(r.get("paired"), r.get("paired_peer")),
                         _paired(r.get("twin_paired"), r.get("twin")), r["target"] or "-"] for r in g["ratios"]])
    if g.get("values"):
        lines += ["## Goals: values", ""] + table(["goal", "case", "measured", "target"], [
            [r["goal"], r["case"], f"{r['value']:.2f}", r["target"]] for r in g["values"]])
    if g.get("limits"):
        gemm = g.get("gemm_gflops")
        lines += ["## Training vs the machine's limit", "",
                  f"fp32 GEMM on all cores, measured in this run: {gemm:.0f} GFLOP/s; a training step costs "
                  f"{TRAIN_FLOPS_PER_MAC} FLOPs per multiply-add of the forward pass." if gemm else
                  "fp32 GEMM not measured.", ""]
        lines += table(["case", "engine", "img/s", "GFLOP per image", "GFLOP/s", "of GEMM"], [
            [r["case"], r["engine"], f"{r['img_s']:.1f}", f"{r['gflop_per_image']:.3g}", f"{r['gflops']:.1f}",
             "-" if r["of_gemm"] is None else f"{100 * r['of_gemm']:.0f}%"] for r in g["limits"]])
    return lines
