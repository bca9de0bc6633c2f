"""No file the project reads can run code (issue 14, item 1).

Every entry point that opens a pickle is fed one whose __reduce__ calls os.system to write a
marker file: the command must refuse it (exit status 1, the message naming the file and the
callable it asked for, posix.system) and the marker must never appear. Before this round
paddle.load opened these files and the command ran (only a one-line warning was printed).
"""
import os
import pickle
import shlex
import subprocess
import sys
import zlib

import numpy as np
import paddle
import pytest

from deploy_helpers import write_labels
from engine_helpers import EVAL, ROOT, TRAIN, env, tiny_config
from ppmobilenet.engine import checkpoint as ckpt
from ppmobilenet.engine.ema import ModelEMA
from ppmobilenet.models import build_model_from_arch

ARCH = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}
DEMO = os.path.join(ROOT, "configs", "demo.yaml")
FIGURES = {"malicious files tried": 0, "refused": 0}


class _RunsCommand:
    """Unpickling this calls os.system(cmd): what a shared .pdparams can do to whoever opens it."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _payload(marker):
    return _RunsCommand(f"touch {shlex.quote(str(marker))}")


def _model():
    paddle.seed(0)
    return build_model_from_arch(ARCH)


def _evil_weights(path, marker):
    """A state dict that fits the model, one tensor replaced by the payload."""
    state = {k: v.numpy() for k, v in _model().state_dict().items()}
    state["fc.bias"] = _payload(marker)
    path.write_bytes(pickle.dumps(state, protocol=4))
    return path


def _evil_states(path, marker, files):
    """A pickle .pdstates (the format of earlier versions) with a valid CRC trailer."""
    data = pickle.dumps({"format_version": 1, "files": files, "epoch": _payload(marker),
                         "global_step": 0}, protocol=4)
    path.write_bytes(data + b"\nPPMOBILENET-CRC32 %08x\n" % (zlib.crc32(data) & 0xFFFFFFFF))
    return path


def _set(prefix, ema=False):
    """A real checkpoint set of the tiny config's model (optimizer and, with ema, EMA too)."""
    model = _model()
    opt = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=model.parameters())
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    opt.step()
    ckpt.save_checkpoint(prefix, model, opt, {"epoch": 1, "global_step": 2, "batch_in_epoch": 0,
                                              "seed": 0, "arch": dict(ARCH)},
                         ema=ModelEMA(model, 0.9) if ema else None)
    return str(prefix)


def _vouch(prefix, suffix):
    """Record the CRC of the (replaced) `suffix` file in the set's .pdstates, as a forger would."""
    states = ckpt._read_states_file(prefix + ".pdstates", "forger")   # no CRC check of the parts
    states["files"][suffix] = ckpt._crc(prefix + suffix)
    ckpt.atomic_save(states, prefix + ".pdstates")


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


DATA_SUBSET = dict(n_train=32, n_val=32)  # the conftest's `data` fixture: a smaller cut


def _config(tmp_path, data, **sections):
    return tiny_config(tmp_path / "cfg.yaml", tmp_path / "run", data, epochs=1, workers=0,
                       Global={"eval_during_train": False, "use_visualdl": False, "device": "cpu"},
                       **sections)


# Each case: (tmp_path, data, marker) -> (the malicious file, the command line).
def _train_pretrained(tmp_path, data, marker):
    evil = _evil_weights(tmp_path / "shared.pdparams", marker)
    return evil, [TRAIN, "-c", _config(tmp_path, data), "-o", f"Global.pretrained_model={evil}"]


def _eval_pretrained(tmp_path, data, marker):
    evil = _evil_weights(tmp_path / "shared.pdparams", marker)
    return evil, [EVAL, "-c", _config(tmp_path, data), "-o", f"Global.pretrained_model={evil}"]


def _eval_checkpoints(tmp_path, data, marker):
    prefix = _set(tmp_path / "run" / "latest")
    evil = _evil_weights(tmp_path / "run" / "latest.pdparams", marker)
    return evil, [EVAL, "-c", _config(tmp_path, data), "-o", f"Global.checkpoints={prefix}"]


def _export_pretrained(tmp_path, data, marker):
    evil = _evil_weights(tmp_path / "shared.pdparams", marker)
    labels = write_labels(str(tmp_path / "labels.txt"))
    return evil, [os.path.join(ROOT, "tools", "export.py"), "-c", DEMO, "-o",
                  f"Global.pretrained_model={evil}", f"Global.save_inference_dir={tmp_path / 'inf'}",
                  f"Infer.class_id_map_file={labels}", "Arch.head=classic"]


def _infer_dygraph(tmp_path, data, marker):
    evil = _evil_weights(tmp_path / "shared.pdparams", marker)
    labels = write_labels(str(tmp_path / "labels.txt"))
    image = os.path.join(data["root"], open(data["val"]).readline().rsplit(None, 1)[0])
    return evil, [os.path.join(ROOT, "tools", "infer.py"), "-c", DEMO, "-o", "Arch.head=classic",
                  "--backend", "dygraph", "--checkpoint", str(evil), "--labels", labels,
                  "--input", image]


def _resume_states(tmp_path, data, marker):
    prefix = _set(tmp_path / "run" / "latest")
    files = {s: ckpt._crc(prefix + s) for s in (".pdparams", ".pdopt")}
    evil = _evil_states(tmp_path / "run" / "latest.pdstates", marker, files)
    return evil, [TRAIN, "-c", _config(tmp_path, data), "-o", f"Global.checkpoints={prefix}",
                  "Global.epochs=2"]


def _resume_part(suffix, ema=False):
    def case(tmp_path, data, marker):
        prefix = _set(tmp_path / "run" / "latest", ema=ema)
        evil = tmp_path / "run" / f"latest{suffix}"
        if suffix == ".pdopt":
            evil.write_bytes(pickle.dumps({"conv1.conv.weight::velocity_0": _payload(marker),
                                           "LR_Scheduler": {}}, protocol=4))
        else:
            _evil_weights(evil, marker)
        _vouch(prefix, suffix)
        sections = {"EMA": {"use_ema": True, "decay": 0.9}} if ema else {}
        return evil, [TRAIN, "-c", _config(tmp_path, data, **sections), "-o",
                      f"Global.checkpoints={prefix}", "Global.epochs=2"]
    return case


def _resume_roll_forward(tmp_path, data, marker):
    """A set mixed by a kill between renames is completed from its temp files: the temp
    .pdstates of the interrupted save is read too."""
    prefix = _set(tmp_path / "run" / "latest")
    blob = bytearray(open(prefix + ".pdparams", "rb").read())
    blob[len(blob) // 2] ^= 0x01                       # the set no longer matches its CRCs
    open(prefix + ".pdparams", "wb").write(bytes(blob))
    evil = _evil_states(tmp_path / "run" / f"latest.pdstates.tmp.{_dead_pid()}", marker,
                        {".pdparams": ckpt._crc(prefix + ".pdparams")})
    return evil, [TRAIN, "-c", _config(tmp_path, data), "-o", f"Global.checkpoints={prefix}",
                  "Global.epochs=2"]


def _summary(tmp_path, data, marker):
    prefix = _set(tmp_path / "run" / "latest")
    evil = _evil_states(tmp_path / "run" / "latest.pdstates", marker,
                        {".pdparams": ckpt._crc(prefix + ".pdparams")})
    return evil, ["-m", "ppmobilenet.engine.checkpoint", prefix]


def _convert_weights(tmp_path, data, marker):
    evil = _evil_weights(tmp_path / "shared.pdparams", marker)
    return evil, [os.path.join(ROOT, "tools", "convert_weights.py"), str(evil), "-c", DEMO,
                  "-o", "Arch.head=classic"]


def _convert_arch_from_states(tmp_path, data, marker):
    prefix = _set(tmp_path / "run" / "latest")
    evil = _evil_states(tmp_path / "run" / "latest.pdstates", marker,
                        {".pdparams": ckpt._crc(prefix + ".pdparams")})
    return evil, [os.path.join(ROOT, "tools", "convert_weights.py"), prefix]


def _benchmark_weights(tmp_path, data, marker):
    evil = _evil_weights(tmp_path / "demo.pdparams", marker)
    return evil, [os.path.join(ROOT, "tools", "benchmark.py"), "--sections", "inference",
                  "--models", "", "--engines", "paddle-onednn", "--demo-weights", str(evil),
                  "--out", str(tmp_path / "bench")]


CASES = {
    "train Global.pretrained_model": _train_pretrained,
    "eval Global.pretrained_model": _eval_pretrained,
    "eval Global.checkpoints .pdparams": _eval_checkpoints,
    "export Global.pretrained_model": _export_pretrained,
    "infer --backend dygraph --checkpoint": _infer_dygraph,
    "resume .pdstates (CRC trailer recomputed)": _resume_states,
    "resume .pdparams (CRC recorded)": _resume_part(".pdparams"),
    "resume .pdopt (CRC recorded)": _resume_part(".pdopt"),
    "resume .pdema (CRC recorded)": _resume_part(".pdema", ema=True),
    "resume roll-forward temp .pdstates": _resume_roll_forward,
    "python -m ppmobilenet.engine.checkpoint": _summary,
    "convert_weights .pdparams": _convert_weights,
    "convert_weights Arch from .pdstates": _convert_arch_from_states,
    "benchmark --demo-weights": _benchmark_weights,
}


@pytest.mark.parametrize("entry", list(CASES))
def test_a_pickle_that_runs_code_is_refused(tmp_path, data, entry):
    marker = tmp_path / "code-ran"
    evil, args = CASES[entry](tmp_path, data, marker)
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env=env())
    FIGURES["malicious files tried"] += 1
    out = r.stdout + r.stderr
    assert not marker.exists(), f"{entry}: the pickle's command ran\n{out[-3000:]}"
    assert r.returncode == 1, (entry, r.returncode, out[-3000:])
    assert str(evil) in r.stderr and "posix.system" in r.stderr and "refused" in r.stderr, \
        (entry, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    FIGURES["refused"] += 1


def test_paddle_load_would_have_run_it(tmp_path):
    """Why: the same file through paddle.load (what these entry points used) runs the command."""
    marker = tmp_path / "code-ran"
    evil = _evil_weights(tmp_path / "shared.pdparams", marker)
    paddle.load(str(evil))
    assert marker.exists()


def test_nothing_lost_the_readers_give_back_what_was_saved(tmp_path):
    """The restricted reader and the JSON .pdstates return every tensor, optimizer accumulator,
    EMA tensor and state value bit for bit (what exact resume needs)."""
    model = _model()
    opt = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=model.parameters())
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    opt.step()
    ema = ModelEMA(model, 0.9)
    states = {"epoch": 3, "best_metric": 0.123456789012345678, "last_eval": {"top1": 0.5},
              "python": (3, tuple(range(5)), None), "scale": np.array([1024.0], "float32"),
              "rng": {"paddle": paddle.get_rng_state()}}
    prefix = str(tmp_path / "latest")
    ckpt.save_checkpoint(prefix, model, opt, states, ema=ema)
    assert open(prefix + ".pdstates", "rb").read(1) == b"{"        # JSON, not a pickle
    fresh = build_model_from_arch(ARCH)
    fresh_opt = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9,
                                          parameters=fresh.parameters())
    fresh_ema = ModelEMA(fresh, 0.9)
    got = ckpt.load_checkpoint(prefix, fresh, fresh_opt, fresh_ema)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    want_opt, got_opt = opt.state_dict(), fresh_opt.state_dict()
    names = {p.name: k for k, p in model.named_parameters()}
    fresh_names = {k: p.name for k, p in fresh.named_parameters()}
    for k, v in want_opt.items():
        if k != "LR_Scheduler":
            param = next(n for n in names if k.startswith(n + "_"))
            twin = fresh_names[names[param]] + k[len(param):]
            assert np.array_equal(v.numpy(), got_opt[twin].numpy()), k
    for k, v in ema.shadow.items():
        assert np.array_equal(v.numpy(), fresh_ema.shadow[k].numpy()), k
    assert got["best_metric"] == states["best_metric"] and got["python"] == states["python"]
    assert got["scale"].dtype == np.float32 and np.array_equal(got["scale"], states["scale"])
    paddle.set_rng_state(got["rng"]["paddle"])
    a = paddle.rand([4]).numpy()
    paddle.set_rng_state(states["rng"]["paddle"])
    assert np.array_equal(a, paddle.rand([4]).numpy())


def test_pdstates_listing_a_file_outside_the_set_is_refused(tmp_path):
    """A crafted .pdstates (CRC trailer recomputed) whose "files" names a path outside the set,
    which the load would read for its CRC and a roll-forward would rename, is refused."""
    import json
    import re

    from ppmobilenet.engine.checkpoint import read_states, save_checkpoint
    from ppmobilenet.models import MobileNetV1
    from ppmobilenet.engine.checkpoint import CheckpointError

    prefix = str(tmp_path / "latest")
    save_checkpoint(prefix, MobileNetV1(class_dim=3, scale=0.25, head="classic"), states={"epoch": 1})
    raw = open(prefix + ".pdstates", "rb").read()
    body = re.sub(rb"\nPPMOBILENET-CRC32 [0-9a-f]{8}\n$", b"", raw)
    state = json.loads(body)
    state["files"]["/../../victim.txt"] = 0
    data = json.dumps(state).encode("utf-8")
    open(prefix + ".pdstates", "wb").write(data + b"\nPPMOBILENET-CRC32 %08x\n" % (zlib.crc32(data) & 0xFFFFFFFF))
    with pytest.raises(CheckpointError) as e:
        read_states(prefix)
    assert "latest.pdstates" in str(e.value) and "not part of a checkpoint set" in str(e.value)
