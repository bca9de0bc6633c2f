"""The GPU branch of the trainer, exercised as far as a CPU allows.

No GPU build of Paddle 3 installs on this project's machines, so tools/train.py runs here under
tests/gpu_on_cpu.py, which makes ppmobilenet and Paddle's AMP set-up believe there is one GPU and
changes nothing else (its docstring lists exactly what); it can also make the loss of chosen steps
infinite, the overflow float16 gives on a GPU. Then Paddle's real GradScaler scales the loss,
unscales the gradients, skips steps whose gradients overflow and adapts its scale, and its
state goes through the trainer's checkpoints; O2's `decorate` casts the weights to float16 with
float32 master weights and a float32 save hook. What cannot run on a CPU at all (float16 kernels)
is stated in docs/training.md and pinned down by test_o2_... below.
"""
import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from engine_helpers import (EVAL, ROOT, TRAIN, assert_same_weights, env, error_line, ok, run_tool,
                            run_until, tiny_config, weights_of)
from ppmobilenet.engine.checkpoint import read_states
from ppmobilenet.engine.optim import build_grad_scaler, build_lr_scheduler, build_optimizer
from ppmobilenet.engine.trainer import NonFiniteLoss, build_loss, train_one_epoch
from ppmobilenet.models import build_model

GPU_ON_CPU = os.path.join(ROOT, "tests", "gpu_on_cpu.py")
INF_LOSS_AT, STEP_OFFSET = "PPMOBILENET_TEST_INF_LOSS_AT", "PPMOBILENET_TEST_STEP_OFFSET"  # gpu_on_cpu.py
STEPS = 8                            # 64 images, batch 16, 2 epochs


DATA_SUBSET = dict(n_train=64, n_val=32)  # the conftest's `data` fixture: a smaller cut


def config(tmp_path, name, data, amp=None, **glob):
    # the packed depthwise path is CPU-only: off, so the CPU reference runs the very kernels
    # the "GPU" run does
    g = {"cpu_kernels": False, "cpu_packed_depthwise": False, "use_visualdl": False, **glob}
    return tiny_config(tmp_path / f"{name}.yaml", tmp_path / name, data, epochs=2, batch=16,
                       workers=0, AMP=amp or {"use_amp": False}, Global=g)


def on_gpu(cfg, *overrides, env=None):
    r = run_tool(GPU_ON_CPU, cfg, "Global.device=gpu", *overrides, extra_env=env)
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "device gpu" in r.stdout and "AMP is off" not in r.stdout, r.stdout[-2000:]
    return r


def scaler_state(prefix):
    s = read_states(prefix)["grad_scaler"]
    assert s, f"{prefix}.pdstates holds no loss scaler state: the scaler was off"
    return {**s, "scale": float(np.asarray(s["scale"]).reshape(-1)[0])}


def test_gpu_device_is_refused_on_this_cpu_build(tmp_path, data):
    """Without the pretence: Global.device=gpu is a config error (exit code 2) naming the key,
    before any work, for training and evaluation alike."""
    assert not paddle.is_compiled_with_cuda()
    cfg = config(tmp_path, "run", data)
    for tool in (TRAIN, EVAL):
        r = run_tool(tool, cfg, "Global.device=gpu")
        assert r.returncode == 2, (tool, r.returncode, r.stdout[-2000:], r.stderr[-2000:])
        assert "Global.device=gpu but this Paddle has no usable GPU" in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "run" / "latest.pdparams")


def test_loss_scaling_and_unscaling_give_the_float32_weights_bit_for_bit(tmp_path, data):
    """O1 with a 1024 loss scale: the loss is multiplied by 1024 and the gradients divided by it
    before the step. Both are exact in float32 (a power of two), and auto_cast stays off on the
    CPU, so the weights must equal the plain float32 run's bit for bit; the scaler state in the
    checkpoint shows it was on and counted every step as finite."""
    ok(run_tool(TRAIN, config(tmp_path, "fp32", data)))
    on_gpu(config(tmp_path, "o1", data, {"use_amp": True, "level": "O1", "scale_loss": 1024.0}))
    assert_same_weights(tmp_path / "fp32" / "latest", tmp_path / "o1" / "latest")
    s = scaler_state(tmp_path / "o1" / "latest")
    assert (s["scale"], s["incr_count"], s["decr_count"]) == (1024.0, STEPS, 0)
    assert s["use_dynamic_loss_scaling"] is True
    assert read_states(tmp_path / "fp32" / "latest")["grad_scaler"] is None


def test_steps_with_overflowing_gradients_are_skipped(tmp_path, data):
    """Every step's scaled loss overflows (made infinite, as float16 overflows on a GPU): every
    step must be skipped, so the trainable weights stay those of Global.pretrained_model bit for bit
    and the momentum buffers stay zero, while the forward passes still move the BatchNorm
    statistics. A fixed scale stays what it was."""
    paddle.seed(5)
    start = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    paddle.save(start.state_dict(), str(tmp_path / "start.pdparams"))
    cfg = config(tmp_path, "static", data, {"use_amp": True, "scale_loss": 1024.0,
                                            "use_dynamic_loss_scaling": False},
                 pretrained_model=str(tmp_path / "start.pdparams"))
    on_gpu(cfg, env={INF_LOSS_AT: "all"})
    got = weights_of(tmp_path / "static" / "latest")
    trainable = {k for k, p in start.named_parameters() if not p.stop_gradient}
    stats = set(got) - trainable
    assert trainable and stats
    assert all(np.array_equal(got[k], start.state_dict()[k].numpy()) for k in trainable)
    assert any(not np.array_equal(got[k], start.state_dict()[k].numpy()) for k in stats)
    velocity = paddle.load(str(tmp_path / "static" / "latest.pdopt"))
    buffers = [v.numpy() for k, v in velocity.items() if "velocity" in k]
    assert len(buffers) == len(trainable) and all(not b.any() for b in buffers)
    s = scaler_state(tmp_path / "static" / "latest")
    assert s["scale"] == 1024.0 and s["use_dynamic_loss_scaling"] is False


@pytest.mark.slow
def test_dynamic_scale_halves_on_overflow_and_its_state_survives_an_exact_resume(tmp_path, data):
    """The scaled losses of steps 2, 3 and 6 of 8 overflow: each step is skipped and halves the scale (1024 -> 128; Paddle
    3.3.1 crashed there under numpy 2: the trainer must survive it). Killed after epoch 1 and
    resumed, the run must end with the uninterrupted run's weights and scaler state, bit for
    bit; a resume that restarted the scaler at 1024 would end at 512."""
    amp = {"use_amp": True, "level": "O1", "scale_loss": 1024.0}
    ref = on_gpu(config(tmp_path, "ref", data, amp), env={INF_LOSS_AT: "2,3,6"})
    end = scaler_state(tmp_path / "ref" / "latest")
    assert (end["scale"], end["incr_count"], end["decr_count"]) == (128.0, 2, 0), (end, ref.stdout[-2000:])
    assert scaler_state(tmp_path / "ref" / "epoch_1")["scale"] == 256.0
    fp32 = config(tmp_path, "fp32", data)
    ok(run_tool(TRAIN, fp32))
    assert not np.array_equal(weights_of(tmp_path / "fp32" / "latest")["fc.bias"],
                              weights_of(tmp_path / "ref" / "latest")["fc.bias"])  # 3 steps fewer

    cut = config(tmp_path, "cut", data, amp)
    run_until(cut, r"saved .*latest \(epoch 1", "Global.device=gpu", script=GPU_ON_CPU,
              extra_env={INF_LOSS_AT: "2,3"})
    assert read_states(tmp_path / "cut" / "latest")["epoch"] == 1
    r = on_gpu(cut, f"Global.checkpoints={tmp_path / 'cut' / 'latest'}",
               env={INF_LOSS_AT: "6", STEP_OFFSET: "4"})
    assert "resumed from" in r.stdout and "global step 4" in r.stdout, r.stdout[-2000:]
    assert_same_weights(tmp_path / "ref" / "latest", tmp_path / "cut" / "latest")
    assert scaler_state(tmp_path / "cut" / "latest") == end


def test_a_real_scaler_overflow_goes_on_and_a_real_nan_stops_the_run(tmp_path, data):
    """Nothing made infinite by the test: AMP.scale_loss=2**127 overflows float32 for real (the
    scaled loss and its gradients), as float16 overflows on a GPU, while the loss itself stays
    finite. Those steps are skipped and halve the dynamic scale until the steps go through: the
    run finishes and its weights moved. A NaN in the weights is a real NaN: the same AMP run
    stops at step 1 with the loss named (exit code 1) and saves nothing."""
    paddle.seed(5)
    start = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    paddle.save(start.state_dict(), str(tmp_path / "start.pdparams"))
    amp = {"use_amp": True, "level": "O1", "scale_loss": 2.0 ** 116}
    r = on_gpu(config(tmp_path, "huge", data, amp, pretrained_model=str(tmp_path / "start.pdparams")))
    assert "training loss is" not in r.stdout + r.stderr and " loss nan" not in r.stdout, r.stdout[-2000:]
    s = scaler_state(tmp_path / "huge" / "latest")
    assert 1.0 < s["scale"] <= 2.0 ** 115, s                     # halved by the skipped steps
    skipped = 116 - int(np.log2(s["scale"]))
    assert 1 <= skipped < STEPS, s
    got = weights_of(tmp_path / "huge" / "latest")
    assert not np.array_equal(got["fc.weight"], start.state_dict()["fc.weight"].numpy())

    broken = dict(start.state_dict())
    broken["fc.bias"] = paddle.full_like(broken["fc.bias"], float("nan"))
    paddle.save(broken, str(tmp_path / "nan.pdparams"))
    r = run_tool(GPU_ON_CPU, config(tmp_path, "nan", data, amp, pretrained_model=str(tmp_path / "nan.pdparams")),
                 "Global.device=gpu")
    assert r.returncode == 1 and "device gpu" in r.stdout, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    line = error_line(r)
    assert "epoch 1, step 1 (batch 1 of 4): the training loss is nan" in line, line
    assert "no checkpoint was saved before it" in line, line
    assert "not a loss-scaler overflow" in line, line      # the AMP note reaches the user
    assert not glob.glob(str(tmp_path / "nan" / "*.pdparams"))


def test_non_finite_loss_stops_the_pass_under_amp_too_and_says_why():
    """In this process (the CPU's own scaler, which passes the loss through): a NaN classifier
    bias gives a NaN loss at the first batch; train_one_epoch stops there with a loss scaler as
    without one, on_batch never runs, and under AMP the error says that this is no scaler
    overflow and how to tell a float16 overflow from a real NaN."""
    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.normal(size=(4, 3, 32, 32)).astype("float32")),
                paddle.to_tensor(rng.integers(0, 10, size=(4, 1)).astype("int64"))) for _ in range(2)]
    opt_cfg = {"momentum": 0.9, "regularizer": {"coeff": 0.0}}
    lr_cfg = {"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 0}
    for scaler in (None, build_grad_scaler({"scale_loss": 1024.0, "use_dynamic_loss_scaling": True})):
        paddle.seed(1)
        model = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
        model.fc.bias.set_value(paddle.full_like(model.fc.bias, float("nan")))
        sched = build_lr_scheduler(lr_cfg, 1, len(batches))
        opt = build_optimizer(opt_cfg, model.parameters(), sched)
        seen = []
        with pytest.raises(NonFiniteLoss) as e:
            train_one_epoch(model, batches, build_loss({"epsilon": 0.0}), opt, sched, scaler=scaler,
                            on_batch=lambda images, stats: seen.append(stats))
        assert (e.value.batch, e.value.amp, seen) == (1, scaler is not None, [])
        assert np.isnan(e.value.loss)
        if scaler is None:
            assert e.value.amp_note == "" and str(e.value) == "the training loss is nan at batch 1 of this pass"
        else:
            assert str(e.value).startswith("the training loss is nan at batch 1 of this pass; under AMP")
            assert "not a loss-scaler overflow" in e.value.amp_note and "AMP.use_amp=false" in e.value.amp_note


O2_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import gpu_on_cpu
gpu_on_cpu.pretend_one_gpu()
import numpy as np
import paddle
from ppmobilenet.config import load_config
from ppmobilenet.engine import Trainer
from ppmobilenet.engine.checkpoint import load_checkpoint, save_checkpoint
from ppmobilenet.models import build_model

def make(out):
    return Trainer(load_config({cfg!r}, ["Global.device=gpu", "Global.output_dir=" + out]))

t = make({out!r})
out = {{"param_dtypes": sorted({{str(p.dtype) for p in t.model.parameters()}}),
        "fp16_params": sum(p.dtype == paddle.float16 for p in t.model.parameters()),
        "multi_precision": bool(t.optimizer._multi_precision)}}
for p in t.model.parameters():                 # a step's gradients, float16 like the weights
    if not p.stop_gradient:
        p._set_grad_ivar(paddle.full(p.shape, 0.5, dtype=p.dtype))
try:
    t.optimizer.step()
    out["step"] = "ran"
except Exception as e:
    out["step"] = str(e).strip().splitlines()[0]
master = t.optimizer._master_weights
fp16 = {{p.name: p for p in t.model.parameters() if p.dtype == paddle.float16}}
out["master"] = len(master), sorted({{str(v.dtype) for v in master.values()}})
out["master_equal"] = all(np.array_equal(master[n].numpy(), p.astype("float32").numpy())
                          for n, p in fp16.items())
save_checkpoint({prefix!r}, t.model, t.optimizer, {{"epoch": 1}})
saved = paddle.load({prefix!r} + ".pdparams")
out["saved_dtypes"] = sorted({{str(v.dtype) for v in saved.values()}})
saved_opt = paddle.load({prefix!r} + ".pdopt")["master_weights"]
keys = dict(t.model.named_parameters())
out["saved_master"] = sorted(saved_opt) == sorted(k for k, p in keys.items() if p.dtype == paddle.float16)

t2 = make({out!r} + "-again")                    # resume into another O2 trainer
load_checkpoint({prefix!r}, t2.model, t2.optimizer)
out["reloaded_equal"] = all(np.array_equal(a.numpy(), b.numpy())
                            for a, b in zip(t.model.parameters(), t2.model.parameters()))
m2 = t2.optimizer._master_weights
out["reloaded_master_equal"] = sorted(m2) == sorted(p.name for p in t2.model.parameters()
                                                    if p.dtype == paddle.float16) and all(
    np.array_equal(m2[p2.name].numpy(), master[p1.name].numpy())
    for p1, p2 in zip(t.model.parameters(), t2.model.parameters()) if p1.name in master)
plain = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
load_checkpoint({prefix!r}, plain)               # eval / export build a float32 model
out["plain_equal"] = all(np.array_equal(a.astype("float32").numpy(), b.numpy())
                         for a, b in zip(t.model.parameters(), plain.parameters()))
print("RESULT " + json.dumps(out))
"""


def test_o2_decorate_keeps_float32_master_weights_and_float32_checkpoints(tmp_path, data):
    """The trainer's O2 set-up (paddle.amp.decorate with save_dtype float32, a multi-precision
    Momentum): the conv and fc weights become float16, BatchNorm stays float32, the optimizer
    keeps a float32 master copy of every float16 weight, and a checkpoint holds float32 weights
    and the master weights, which a resume restores exactly. The step itself cannot run on a
    CPU: Paddle has no float16 momentum kernel there (the message is pinned: if a Paddle release
    adds one, docs/training.md must change)."""
    cfg = config(tmp_path, "o2", data, {"use_amp": True, "level": "O2"})
    script = tmp_path / "o2.py"
    script.write_text(textwrap.dedent(O2_SCRIPT.format(
        tests=os.path.join(ROOT, "tests"), cfg=cfg, prefix=str(tmp_path / "o2" / "latest"),
        out=str(tmp_path / "o2"))))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env())
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["param_dtypes"] == ["paddle.float16", "paddle.float32"] and out["fp16_params"] > 0
    assert out["multi_precision"] is True
    assert "kernel `momentum` is not registered" in out["step"] and "float16" in out["step"], out
    assert out["master"] == [out["fp16_params"], ["paddle.float32"]] and out["master_equal"]
    assert out["saved_dtypes"] == ["paddle.float32"] and out["saved_master"]
    assert out["reloaded_equal"] and out["reloaded_master_equal"] and out["plain_equal"], out
