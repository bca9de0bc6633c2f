"""Runs inside the Paddle Lite interpreter (Python <= 3.10 with paddlelite, numpy<2): opt and
predict on arrays. Needs the standard library, numpy, Pillow and paddlelite, and of ppmobilenet
only io.py and board.py (no paddle): it is started as a script by another interpreter
(ppmobilenet.deploy.lite_env).

It runs in a child process on purpose: Lite aborts the whole process on a bad model file and opt
can segfault on an op it cannot convert; the parent turns that into a readable error.

    python lite_worker.py version --result R.json
    python lite_worker.py opt --model-file M --param-file P --target arm --out PREFIX --result R.json
    python lite_worker.py run --nb F.nb --inputs in.npz --outputs out.npz --result R.json
"""
import argparse
import os
import sys

import numpy as np

# Started as a script, this folder is sys.path[0], not the one holding the ppmobilenet package.
# Appended, not prepended: this interpreter's own numpy and paddlelite must win.
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from ppmobilenet.board import lite_predictor, lite_run, lite_version  # noqa: E402
from ppmobilenet.io import atomic_output, atomic_write_json  # noqa: E402


def cmd_version(args):
    return {"lite_version": lite_version(), "python": sys.executable,
            "python_version": "%d.%d.%d" % sys.version_info[:3], "numpy": np.__version__}


def cmd_opt(args):
    from paddlelite.lite import Opt          # only Lite's interpreter has it
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)  # opt fails silently-ish without its output folder
    opt = Opt()
    opt.set_model_file(args.model_file)
    opt.set_param_file(args.param_file)
    opt.set_valid_places(args.target)
    opt.set_model_type("naive_buffer")
    opt.set_optimize_out(args.out)
    if args.quant_type:
        opt.set_quant_model(True)
        opt.set_quant_type(args.quant_type)
    if args.fp16:
        opt.enable_fp16()
    opt.run()
    nb = args.out + ".nb"
    if not os.path.isfile(nb):
        raise SystemExit(f"opt wrote no {nb}")
    return {"nb": nb, "lite_version": opt.version(), "target": args.target}


def cmd_run(args):
    predictor = lite_predictor(args.nb)
    with np.load(args.inputs) as inputs:
        outputs = {key: lite_run(predictor, inputs[key]) for key in sorted(inputs.files)}
    with atomic_output(args.outputs, suffix=".npz") as tmp:
        np.savez(tmp, **outputs)
    return {"batches": len(outputs)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("version")
    o = sub.add_parser("opt")
    o.add_argument("--model-file", required=True)
    o.add_argument("--param-file", required=True)
    o.add_argument("--target", required=True)
    o.add_argument("--out", required=True, help="output prefix; opt appends .nb")
    o.add_argument("--quant-type", default=None, help="QUANT_INT8 | QUANT_INT16 (weights only)")
    o.add_argument("--fp16", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--nb", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--outputs", required=True)
    for s in (v, o, r):
        s.add_argument("--result", required=True, help="JSON file the result is written to")
    args = p.parse_args(argv)
    result = {"version": cmd_version, "opt": cmd_opt, "run": cmd_run}[args.cmd](args)
    atomic_write_json(args.result, result)


if __name__ == "__main__":
    main()
