"""Shared by the engine tests: a small ImageNetDataset cut from the real demo PNGs, a tiny config
written as YAML, runners for tools/train.py (plain, or killed when a line appears) and the same
training run in this process (for the loop's own logic, where the command line is not the point)."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
EVAL = os.path.join(ROOT, "tools", "eval.py")
NORMALIZE = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "data_format": "HWC"}


def demo_subset(folder, cache_dir, n_train=192, n_val=96, size=32):
    """List files over the first digits PNGs of each split (every class present)."""
    from ppmobilenet.data import prepare_demo_digits
    paths = prepare_demo_digits(cache_dir, image_size=size)
    os.makedirs(folder, exist_ok=True)
    out = {"root": paths["root"], "label_file": paths["label_file"], "size": size}
    for name, src, n in (("train", paths["train_list"], n_train), ("val", paths["val_list"], n_val)):
        with open(src) as f:
            lines = [ln for ln in f if ln.strip()]
        step = max(1, len(lines) // n)
        dst = os.path.join(folder, f"{name}.txt")
        with open(dst, "w") as f:
            f.writelines(lines[::step][:n])
        out[name] = dst
    return out


def tiny_config(path, out_dir, data, epochs=2, batch=32, workers=2, **sections):
    """A MobileNetV1 x0.25 config over `data` (from demo_subset); `sections` update sections,
    e.g. Global={"save_interval": 100}."""
    size = data["size"]

    def split(lst, train):
        t = ([{"RandomResizedCrop": {"size": size, "scale": [0.6, 1.0]}}] if train else []) + \
            [{"Normalize": NORMALIZE}, {"Transpose": {"order": [2, 0, 1]}}]
        return {"dataset": {"name": "ImageNetDataset", "image_root": data["root"],
                            "cls_label_path": lst, "label_file": data["label_file"]},
                "transforms": t,
                "sampler": {"batch_size": batch, "shuffle": train, "drop_last": False},
                "loader": {"num_workers": workers, "use_shared_memory": True}}

    cfg = {
        "Global": {"output_dir": str(out_dir), "epochs": epochs, "print_batch_step": 1,
                   "save_interval": 1, "eval_interval": 1, "device": "cpu", "seed": 0,
                   "image_shape": [3, size, size]},
        "Arch": {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"},
        "Optimizer": {"name": "Momentum", "momentum": 0.9,
                      "lr": {"name": "Cosine", "learning_rate": 0.1},
                      "regularizer": {"name": "L2", "coeff": 4e-5}},
        "DataLoader": {"Train": split(data["train"], True), "Eval": split(data["val"], False)},
    }
    for sec, values in sections.items():
        cfg.setdefault(sec, {}).update(values)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return str(path)


def _initial_env_has(name):
    """Whether `name` was in this process's environment when it started (`import paddle`
    sets OMP_NUM_THREADS=1 in os.environ when it is unset)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            return any(v.startswith(name.encode() + b"=") for v in f.read().split(b"\0"))
    except OSError:
        return name in os.environ


def env(**extra):
    """The environment for a tool run: as a user's shell would give it (threads chosen by the
    tool itself), unbuffered output, plus `extra`."""
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    if not _initial_env_has("OMP_NUM_THREADS"):
        e.pop("OMP_NUM_THREADS", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_tool(script, config, *overrides, timeout=300, cwd=None, extra_env=None):
    args = [sys.executable, script, "-c", str(config)]
    if overrides:
        args += ["-o", *overrides]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env=env(**(extra_env or {})))


def ok(r):
    """A finished tool run that exited 0 (its output in the failure message)."""
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def weights_of(prefix, suffix=".pdparams"):
    """{name: numpy array} of a saved weights file (`prefix` + `suffix`)."""
    import paddle  # as demo_subset: this module stays importable before configure_cpu matters
    return {k: v.numpy() for k, v in paddle.load(str(prefix) + suffix).items()}


def differing_tensors(a, b, suffix=".pdparams"):
    """-> (the names of the tensors not bit for bit equal, a's arrays, b's arrays) of two weights
    files, which must hold the same names."""
    pa, pb = weights_of(a, suffix), weights_of(b, suffix)
    assert sorted(pa) == sorted(pb), (sorted(set(pa) ^ set(pb)))
    return [k for k in pa if not np.array_equal(pa[k], pb[k])], pa, pb


def assert_same_weights(a, b, suffix=".pdparams"):
    """Bit for bit: docs/reliability.md promises bit-identical weights after a resume."""
    differ, pa, pb = differing_tensors(a, b, suffix)
    assert not differ, f"{len(differ)} tensors of {a}{suffix} differ from {b}, e.g. {differ[0]} by " \
                       f"{float(np.abs(pa[differ[0]] - pb[differ[0]]).max())}"


def error_line(r):
    """The `<title>: <message>` line a tool printed for a refused input (no traceback allowed)."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("config error:", "error:", "output folder in use:"))]
    assert lines, f"rc {r.returncode}: no error line\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return lines[-1]


def train_in_process(config, *overrides):
    """ppmobilenet.engine.train on the config as tools/train.py would load it -> its summary."""
    from ppmobilenet.config import load_config
    from ppmobilenet.engine import train
    return train(load_config(str(config), list(overrides)))


def run_until(config, pattern, *overrides, timeout=300, extra_env=None, script=TRAIN):
    """Start tools/train.py, SIGKILL its process group when a stdout line matches `pattern`.
    Returns the output read until then. Fails if the run ends before the line appears."""
    args = [sys.executable, script, "-c", str(config)] + (["-o", *overrides] if overrides else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env(**(extra_env or {})), start_new_session=True)
    seen, rx, deadline = [], re.compile(pattern), time.time() + timeout
    try:
        for line in proc.stdout:
            seen.append(line)
            if rx.search(line):
                os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader workers
                proc.wait(30)
                return "".join(seen)
            if time.time() > deadline:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    raise AssertionError(f"the run ended (rc {proc.returncode}) before a line matched "
                         f"{pattern!r}:\n{''.join(seen)[-3000:]}")


def vdl_scalars(logdir, tag):
    """[(step, value)] of `tag` in the newest VisualDL record file of `logdir` (what the
    VisualDL server shows), read with VisualDL's own reader."""
    from visualdl import LogReader
    files = sorted(f for f in os.listdir(logdir) if "vdlrecords" in f)
    reader = LogReader(file_path=os.path.join(logdir, files[-1]))
    return [(r.id, r.value) for r in reader.get_data("scalar", tag)]
