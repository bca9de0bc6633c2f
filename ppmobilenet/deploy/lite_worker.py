"""Runs inside the Paddle Lite interpreter (Python <= 3.10 with paddlelite, numpy<2): opt and
predict on arrays. Needs only the standard library, numpy and paddlelite - no paddle, no
ppmobilenet - because it is started as a script by another interpreter (ppmobilenet.deploy.lite).

It runs in a child process on purpose: Lite aborts the whole process on a bad model file and opt
can segfault on an op it cannot convert; the parent turns that into a readable error.

    python lite_worker.py version --result R.json
    python lite_worker.py opt --model-file M --param-file P --target arm --out PREFIX --result R.json
    python lite_worker.py run --nb F.nb --inputs in.npz --outputs out.npz --result R.json
"""
import argparse
import json
import os
import sys


def _write_result(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def cmd_version(args):
    import numpy
    from paddlelite.lite import Opt
    return {"lite_version": Opt().version(), "python": sys.executable,
            "python_version": "%d.%d.%d" % sys.version_info[:3], "numpy": numpy.__version__}


def cmd_opt(args):
    from paddlelite.lite import Opt
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
    import numpy as np
    from paddlelite.lite import MobileConfig, create_paddle_predictor
    config = MobileConfig()
    config.set_model_from_file(args.nb)
    predictor = create_paddle_predictor(config)
    outputs = {}
    with np.load(args.inputs) as inputs:
        for key in sorted(inputs.files):
            predictor.get_input(0).from_numpy(np.ascontiguousarray(inputs[key], dtype="float32"))
            predictor.run()
            outputs[key] = predictor.get_output(0).numpy().copy()
    tmp = args.outputs + ".tmp.npz"
    np.savez(tmp, **outputs)
    os.replace(tmp, args.outputs)
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
    _write_result(args.result, result)


if __name__ == "__main__":
    main()
