"""The training engine: configs, schedules, the loop (train_one_epoch), seeds, EMA, AMP on CPU,
bad samples and the eval command in this process; accuracy on the demo data, pretrained weights
and bad configs through tools/train.py and tools/eval.py (exit codes, messages)."""
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from engine_helpers import (EVAL, ROOT, TRAIN, env, ok, run_tool, tiny_config, train_in_process,
                            vdl_scalars)
from ppmobilenet.config import load_config
from ppmobilenet.engine import evaluate, train_one_epoch
from ppmobilenet.engine.checkpoint import CheckpointError, read_states
from ppmobilenet.engine.ema import ModelEMA
from ppmobilenet.engine.evaluation import effective_topk, topk_correct
from ppmobilenet.engine.optim import build_lr_scheduler, build_optimizer
from ppmobilenet.engine.runtime import seed_everything
from ppmobilenet.engine.trainer import build_loss
from ppmobilenet.models import build_model
from ppmobilenet.weights import load_pretrained

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "engine-cache")


# ------------------------------------------------------------------ configs and schedules

def test_every_config_loads():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"demo.yaml", "seed_demo.yaml", "MobileNetV1_x0_25.yaml", "MobileNetV1_x0_5.yaml",
            "MobileNetV1_x0_75.yaml", "MobileNetV1_x1_0.yaml", "MobileNetV2_x1_0.yaml"} <= names
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg["Global"]["epochs"] >= 1, path


@pytest.mark.parametrize("scale", ["0_25", "0_5", "0_75", "1_0"])
def test_mobilenet_v1_recipes_follow_the_fluid_flags(scale):
    cfg = load_config(os.path.join(ROOT, "configs", f"MobileNetV1_x{scale}.yaml"))
    assert cfg["Arch"] == {"name": "mobilenet_v1", "class_num": 1000,
                           "scale": float(scale.replace("_", ".")), "head": "classic", "variant": "paddle"}
    opt = cfg["Optimizer"]
    assert (opt["name"], opt["momentum"], opt["regularizer"]["coeff"]) == ("Momentum", 0.9, 3e-5)
    assert (opt["lr"]["name"], opt["lr"]["decay_epochs"], opt["lr"]["values"]) == \
        ("Piecewise", [30, 60, 90], [0.1, 0.01, 0.001, 0.0001])
    assert cfg["Global"]["epochs"] == 120 and opt["lr"]["warmup_epoch"] == 0
    assert cfg["DataLoader"]["Train"]["sampler"]["batch_size"] * 4 == 256  # on 4 cards
    train = [next(iter(t)) for t in cfg["DataLoader"]["Train"]["transforms"]]
    assert train[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert cfg["DataLoader"]["Train"]["transforms"][0]["RandomResizedCrop"]["scale"] == [0.08, 1.0]
    assert cfg["DataLoader"]["Eval"]["transforms"][:2] == [{"Resize": {"size": 256}},
                                                          {"CenterCrop": {"size": 224}}]


def test_mobilenet_v2_recipe():
    cfg = load_config(os.path.join(ROOT, "configs", "MobileNetV2_x1_0.yaml"))
    assert cfg["Arch"]["name"] == "mobilenet_v2" and cfg["Global"]["epochs"] == 240
    assert cfg["Optimizer"]["lr"]["name"] == "Cosine" and cfg["Optimizer"]["regularizer"]["coeff"] == 4e-5
    assert cfg["DataLoader"]["Train"]["sampler"]["batch_size"] * 4 == 500


def test_lr_schedules_step_per_iteration():
    pw = build_lr_scheduler({"name": "Piecewise", "learning_rate": 0.1, "decay_epochs": [2, 3],
                             "values": [0.1, 0.01, 0.001], "warmup_epoch": 1,
                             "warmup_start_lr": 0.0}, epochs=4, steps_per_epoch=4)
    got = []
    for _ in range(16):
        got.append(round(pw(), 6))
        pw.step()
    # linear ramp over the first epoch's 4 steps, then drops exactly at epochs 2 and 3
    assert got == [0.0, 0.025, 0.05, 0.075] + [0.1] * 4 + [0.01] * 4 + [0.001] * 4
    cos = build_lr_scheduler({"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 1,
                              "warmup_start_lr": 0.01}, epochs=3, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(cos())
        cos.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.002


def test_label_smoothing_and_topk_cap():
    logits = paddle.to_tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = paddle.to_tensor([0, 2])
    plain = build_loss({"name": "CELoss", "epsilon": 0.0})(logits, labels).item()
    smooth = build_loss({"name": "CELoss", "epsilon": 0.1})(logits, labels).item()
    logp = paddle.nn.functional.log_softmax(logits).numpy()
    want = np.mean([-(0.9 + 0.1 / 3) * logp[i, y] - sum(0.1 / 3 * logp[i, k] for k in range(3) if k != y)
                    for i, y in enumerate([0, 2])])
    assert smooth == pytest.approx(float(want), rel=1e-5) and smooth != pytest.approx(plain)
    assert effective_topk([1, 5], 3) == [1, 3] and effective_topk([1, 5], 1000) == [1, 5]
    assert topk_correct(logits, labels, [1, 2, 3]) == [1.0, 2.0, 2.0]


# ------------------------------------------------------------------ runs

def _tiny_model(seed):
    seed_everything(seed)
    return build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")


def _optimization(model, steps):
    opt_cfg = load_config(os.path.join(ROOT, "configs", "demo.yaml"))["Optimizer"]
    sched = build_lr_scheduler(opt_cfg["lr"], epochs=1, steps_per_epoch=steps)
    return build_optimizer(opt_cfg, model.parameters(), sched), sched


def test_train_one_epoch_is_the_plain_loop():
    """train_one_epoch over three batches = forward, loss, backward, step, schedule written out
    by hand: the same weights bit for bit, and it reports what it saw."""
    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.normal(size=(8, 3, 32, 32)).astype("float32")),
                paddle.to_tensor(rng.integers(0, 10, size=(8, 1)).astype("int64"))) for _ in range(3)]
    model, ref = _tiny_model(1), _tiny_model(1)
    opt, sched = _optimization(model, 3)
    ref_opt, ref_sched = _optimization(ref, 3)
    ema, seen = ModelEMA(model, 0.9), []
    got = train_one_epoch(model, batches, build_loss({"epsilon": 0.0}), opt, sched, topk=[1, 5], ema=ema,
                          on_batch=lambda images, stats: seen.append(stats))

    ref.train()
    ref_losses = []
    for x, y in batches:
        loss = paddle.nn.functional.cross_entropy(ref(x), y.reshape([-1]))
        loss.backward()
        ref_opt.step()
        ref_opt.clear_grad()
        ref_sched.step()
        ref_losses.append(loss.item())
    for k, v in ref.state_dict().items():
        assert np.array_equal(model.state_dict()[k].numpy(), v.numpy()), k
    assert [s.loss for s in seen] == ref_losses and [s.samples for s in seen] == [8, 8, 8]
    assert got["steps"] == 3 and got["samples"] == 24 and sched.last_epoch == ref_sched.last_epoch == 3
    assert got["loss"] == pytest.approx(np.mean(ref_losses), rel=1e-6)
    assert got["top1"] == pytest.approx(sum(s.correct[0] for s in seen) / 24)
    assert all(s.correct[0] <= s.correct[1] <= 8 for s in seen) and ema.updates == 3


def _ema_closed_form(snapshots, decays):
    """ema_n = (prod_t d_t) w_0 + sum_k (1 - d_k) (prod_{t>k} d_t) w_k, in float64, per tensor:
    snapshots[k] = the model's state after step k (snapshots[0]: before the first step),
    decays[k - 1] = the decay used by the update after step k."""
    n = len(decays)
    out = {}
    for key in snapshots[0]:
        acc = np.prod(decays) * snapshots[0][key].astype("float64")
        for k in range(1, n + 1):
            acc = acc + (1.0 - decays[k - 1]) * np.prod(decays[k:]) * snapshots[k][key].astype("float64")
        out[key] = acc
    return out


def test_ema_equals_its_closed_form_over_real_steps():
    """Six real Momentum steps through train_one_epoch with the engine's EMA (decay 0.3: the
    warm-up min(decay, (1 + t) / (10 + t)) gives 2/11 and 3/12 for the first two updates, then
    0.3), the raw state recorded after every step: every EMA tensor, weights and BatchNorm
    running statistics alike, must equal the closed form of docs/training.md's formula.
    Tolerance: the EMA runs in float32, each update rounds a few times (the decay to float32,
    one multiply-add), so after n updates an element is off by at most ~4 n float32 ulps of the
    largest magnitude it took; the closed form of a wrong formula (no warm-up, the warm-up one
    update late, the update applied to the weights before the step, BN statistics left out)
    must miss by far more than that, or the check could not tell them apart."""
    rng = np.random.default_rng(3)
    batches = [(paddle.to_tensor(rng.normal(size=(8, 3, 32, 32)).astype("float32")),
                paddle.to_tensor(rng.integers(0, 10, size=(8, 1)).astype("int64"))) for _ in range(6)]
    model = _tiny_model(2)
    opt, sched = _optimization(model, len(batches))

    def state():
        return {k: v.numpy().copy() for k, v in model.state_dict().items()}

    snapshots = [state()]
    ema = ModelEMA(model, decay=0.3)
    train_one_epoch(model, batches, build_loss({"epsilon": 0.0}), opt, sched, ema=ema,
                    on_batch=lambda images, stats: snapshots.append(state()))
    n = len(batches)
    assert ema.updates == n and len(snapshots) == n + 1
    got = {k: v.numpy() for k, v in ema.state_dict().items()}
    stats = {k for k in got if k.endswith(("_mean", "_variance"))}
    assert sorted(got) == sorted(snapshots[0]) and stats  # every float tensor, BN statistics too

    eps = float(np.finfo(np.float32).eps)
    bound = {k: 4 * n * eps * np.max(np.abs([s[k] for s in snapshots]), axis=0) + 1e-30 for k in got}

    def worst_miss(want):  # the largest |ema - want| / bound over all elements of all tensors
        return max(float(np.max(np.abs(got[k] - want[k]) / bound[k])) for k in got)

    decays = [min(0.3, (1.0 + t) / (10.0 + t)) for t in range(1, n + 1)]
    assert decays[:3] == [2 / 11, 3 / 12, 0.3]
    miss = worst_miss(_ema_closed_form(snapshots, decays))
    assert miss <= 1.0, f"the EMA is {miss:.3g} tolerances away from its closed form"

    late = [min(0.3, t / (9.0 + t)) for t in range(1, n + 1)]
    before_step = snapshots[:1] + snapshots[:-1]
    no_stats = [{k: (s[k] if k not in stats else snapshots[0][k]) for k in s} for s in snapshots]
    for wrong in (_ema_closed_form(snapshots, [0.3] * n), _ema_closed_form(snapshots, late),
                  _ema_closed_form(before_step, decays), _ema_closed_form(no_stats, decays)):
        assert worst_miss(wrong) > 100.0, "a wrong formula passes: the steps are too small to check"

    # applied(): the body sees exactly the EMA weights, the raw ones come back bit for bit
    with ema.applied(model):
        inside = state()
    assert all(np.array_equal(inside[k], got[k]) for k in got)
    assert all(np.array_equal(v, snapshots[-1][k]) for k, v in state().items())


def test_seed_gives_identical_losses(tmp_path, data):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = tiny_config(tmp_path / f"{name}.yaml", tmp_path / name, data, epochs=1, workers=0,
                          Global={"seed": seed, "eval_during_train": False})
        assert train_in_process(cfg)["global_step"] == 6
        runs[name] = [v for _, v in vdl_scalars(tmp_path / name / "vdl", "train/loss")]
    assert len(runs["a"]) == 6 and runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]  # the seed is what makes them equal
    pa, pb = (paddle.load(str(tmp_path / n / "latest.pdparams")) for n in "ab")
    assert all(np.array_equal(pa[k].numpy(), pb[k].numpy()) for k in pa)


def test_a_resume_names_what_changed_the_lr_schedule(tmp_path, data):
    """Another batch size changes the steps per epoch, hence the schedule: the note names
    DataLoader.Train.sampler.batch_size, not Global.epochs or Optimizer.lr."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, workers=0, Global={"eval_during_train": False})
    train_in_process(cfg)
    train_in_process(cfg, f"Global.checkpoints={out / 'epoch_1'}", "Global.epochs=2",
                     "DataLoader.Train.sampler.batch_size=16")
    log = (out / "train.log").read_text()
    assert "DataLoader.Train.sampler.batch_size changed from 32 to 16 (6 -> 12 steps per epoch); " \
           "following the config" in log, log[-2000:]
    assert "Global.epochs or Optimizer.lr changed" not in log
    train_in_process(cfg, f"Global.checkpoints={out / 'epoch_1'}", "Global.epochs=3")
    log = (out / "train.log").read_text()
    assert log.count("Global.epochs or Optimizer.lr changed; following the config") == 1


@pytest.mark.slow
def test_demo_config_learns_the_digits_and_eval_tool_agrees(tmp_path, cache):
    """configs/demo.yaml at 32x32 for 5 epochs on the whole demo split (chance is 10%). Seeds
    0-2 gave 81-94% with and without the packed depthwise path; 3 epochs gave 70-88%, too close
    to any bar for float rounding not to cross it."""
    out = tmp_path / "demo"
    small = [f"Global.output_dir={out}", "Global.epochs=5", "Global.print_batch_step=20",
             "Optimizer.lr.warmup_epoch=1", "Optimizer.lr.learning_rate=0.05",
             "DataLoader.Train.sampler.batch_size=32",
             "DataLoader.Train.transforms.0.RandomResizedCrop.scale=[0.9, 1.0]",
             f"DataLoader.Train.dataset.cache_dir={cache}", f"DataLoader.Eval.dataset.cache_dir={cache}",
             "DataLoader.Train.dataset.image_size=32", "DataLoader.Eval.dataset.image_size=32",
             "DataLoader.Train.transforms.0.RandomResizedCrop.size=32",
             "DataLoader.Eval.transforms.0.Resize.size=36", "DataLoader.Eval.transforms.1.CenterCrop.size=32"]
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    r = ok(run_tool(TRAIN, demo, *small))
    best = read_states(out / "best_model")
    assert best["best_metric"] >= 0.75, r.stdout[-2000:]
    assert best["last_eval"]["samples"] == 359  # the whole val split

    e = ok(run_tool(EVAL, demo, *small, f"Global.pretrained_model={out / 'best_model'}"))
    m = re.search(r"eval: loss ([\d.]+) top1 ([\d.]+) top5 ([\d.]+) \((\d+) images\)", e.stdout)
    assert m, e.stdout
    assert float(m.group(2)) == pytest.approx(best["best_metric"], abs=1e-4)
    assert int(m.group(4)) == 359


def test_ema_amp_on_cpu_bad_samples_and_run_outputs(tmp_path, data):
    """A whole run with EMA, AMP requested on CPU and a missing image: what it writes and logs.
    The numbers are checked elsewhere: the EMA against its closed form
    (test_ema_equals_its_closed_form_over_real_steps), AMP on CPU against a float32 run bit for
    bit (test_amp_requested_on_cpu_trains_exactly_as_float32)."""
    # a list file with one image that is not on disk, at line 3
    with open(data["train"]) as f:
        lines = f.readlines()
    lines.insert(2, "train/3/missing_image.png 3\n")
    bad_list = tmp_path / "train_with_hole.txt"
    bad_list.write_text("".join(lines))
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, workers=0, EMA={"use_ema": True, "decay": 0.99},
                      AMP={"use_amp": True, "level": "O1"})
    summary = train_in_process(cfg, f"DataLoader.Train.dataset.cls_label_path={bad_list}",
                               "DataLoader.Train.dataset.skip_bad_samples=true")
    log = (out / "train.log").read_text()

    assert log.count("AMP is off") == 1  # said once, on CPU
    # the data pipeline's end-of-epoch report, in the console and in train.log
    assert "missing_image.png" in log and "train_with_hole.txt:3" in log, log[-3000:]
    assert "1 bad sample(s) skipped" in log

    # EMA: evaluated, logged, saved beside each checkpoint, loadable as weights
    assert re.search(r"EMA top1 [\d.]+", log)
    assert vdl_scalars(out / "vdl", "eval_ema/top1")
    for prefix in ("latest", "best_model", "epoch_1"):
        assert (out / f"{prefix}.pdema").exists(), prefix
    model = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    assert load_pretrained(model, out / "latest.pdema")["skipped"] == []
    ema = paddle.load(str(out / "latest.pdema"))
    raw = paddle.load(str(out / "latest.pdparams"))
    assert not np.array_equal(ema["fc.weight"].numpy(), raw["fc.weight"].numpy())

    # the resolved config (loads again, seed recorded) and the class names
    resolved = load_config(str(out / "config.yaml"))
    assert resolved["EMA"]["use_ema"] is True and resolved["Global"]["seed"] == 0
    labels = (out / "labels.txt").read_text().splitlines()
    assert labels[0] == "0 zero" and len(labels) == 10
    assert f"checkpoints in {out}: best_model, epoch_1, latest" in log
    assert f"visualdl --logdir {out / 'vdl'}" in log

    # the eval command on the best weights gives the metric the run recorded for them
    best = read_states(out / "best_model")
    assert summary["best_metric"] == best["best_metric"] and summary["global_step"] == 7  # 193 lines, batch 32
    m = evaluate(load_config(cfg, [f"Global.pretrained_model={out / 'best_model'}"]))
    assert m["samples"] == 96 and m["top1"] == pytest.approx(best["best_metric"], abs=1e-6)


def test_amp_requested_on_cpu_trains_exactly_as_float32(tmp_path, data):
    """docs/training.md: on CPU `AMP is off` and the run trains in float32. With AMP.use_amp at
    O1 and at O2 (a loss scale that is not a power of two, so a scaler left on would round the
    gradients), the weights, BatchNorm statistics and optimizer state must equal the plain run's
    bit for bit, the weights stay float32 (no O2 decorate) and the checkpoint holds no scaler."""
    runs = {"off": {"use_amp": False}, "O1": {"use_amp": True, "level": "O1", "scale_loss": 1000.0},
            "O2": {"use_amp": True, "level": "O2", "scale_loss": 1000.0}}
    for name, amp in runs.items():
        cfg = tiny_config(tmp_path / f"{name}.yaml", tmp_path / name, data, epochs=1, workers=0,
                          AMP=amp, Global={"eval_during_train": False, "use_visualdl": False})
        assert train_in_process(cfg)["global_step"] == 6
        log = (tmp_path / name / "train.log").read_text()
        assert log.count("AMP is off") == (0 if name == "off" else 1), log[-2000:]
        assert read_states(tmp_path / name / "latest")["grad_scaler"] is None

    def load(name, part):
        return paddle.load(str(tmp_path / name / f"latest.{part}"))
    ref_w, ref_opt = load("off", "pdparams"), load("off", "pdopt")
    for name in ("O1", "O2"):
        w, opt = load(name, "pdparams"), load(name, "pdopt")
        assert sorted(w) == sorted(ref_w) and {str(v.dtype) for v in w.values()} == {"paddle.float32"}
        assert [k for k in ref_w if not np.array_equal(w[k].numpy(), ref_w[k].numpy())] == [], name
        assert "master_weights" not in opt and sorted(opt) == sorted(ref_opt), name
        assert [k for k in ref_opt if isinstance(ref_opt[k], paddle.Tensor)
                and not np.array_equal(opt[k].numpy(), ref_opt[k].numpy())] == [], name


def test_pretrained_fluid_directory_and_pdparams(tmp_path):
    """Released fluid MobileNetV1 weights (1000 classes, one file per parameter) into a 10-class
    model: everything but the classifier loads, and the report says the classifier was skipped."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps([{"graph": "released_v1", "scale": 0.25, "class_dim": 1000}]))
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fluid_reference.py"), str(spec),
                    str(tmp_path / "fluid")], check=True, capture_output=True, timeout=300,
                   env=env(FLAGS_enable_pir_api="0"))
    weights = tmp_path / "fluid" / "0" / "weights"
    model = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    fresh_fc = model.fc.weight.numpy().copy()
    rep = load_pretrained(model, str(weights))
    assert sorted(rep["skipped"]) == ["fc7_offset", "fc7_weights"] and "NOT loaded" in rep["message"]
    assert rep["loaded"] == 135
    from ppmobilenet.models import read_fluid_tensor
    assert np.array_equal(model.conv1.conv.weight.numpy(),
                          read_fluid_tensor(str(weights / "conv1_weights")))
    assert np.array_equal(model.fc.weight.numpy(), fresh_fc)
    with pytest.raises(CheckpointError, match="Global.pretrained_model"):
        load_pretrained(model, str(weights), skip_classifier_on_mismatch=False)

    # .pdparams with and without the suffix, same class count: nothing skipped
    paddle.save(model.state_dict(), str(tmp_path / "w.pdparams"))
    twin = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    assert load_pretrained(twin, str(tmp_path / "w"))["skipped"] == []
    assert np.array_equal(twin.fc.weight.numpy(), model.fc.weight.numpy())


# ------------------------------------------------------------------ bad configs

BAD = [
    (["Global.epoch=3"], 2, ["Global.epoch", "did you mean 'Global.epochs'"]),
    (["Global.epochs=many"], 2, ["Global.epochs", "int"]),
    (["Optimizer.lr.name=Piecewise", "Optimizer.lr.values=[0.1, 0.01]"], 2, ["Optimizer.lr.values"]),
    (["Global.device=gpu"], 2, ["Global.device"]),
    (["Arch.class_num=5", "Metric.topk=[1]"], 1, ["Arch.class_num is 5", "train.txt:"]),
    (["Global.checkpoints=/nonexistent/latest"], 1, ["Global.checkpoints", "/nonexistent/latest.pdparams"]),
    (["Global.pretrained_model=/nonexistent/w"], 1, ["Global.pretrained_model", "/nonexistent/w"]),
]


@pytest.mark.parametrize("overrides,code,words", BAD, ids=[b[0][0].split("=")[0] for b in BAD])
def test_bad_config_is_refused_by_name(tmp_path, data, overrides, code, words):
    if overrides == ["Global.device=gpu"] and paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "run", data, epochs=1)
    r = run_tool(TRAIN, cfg, *overrides)
    assert r.returncode == code, r.stdout[-2000:] + r.stderr[-2000:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "latest.pdparams").exists()


def test_pretrained_of_another_width_is_refused(tmp_path, data):
    other = build_model("mobilenet_v1", class_dim=10, scale=0.5, head="classic")
    paddle.save(other.state_dict(), str(tmp_path / "wide.pdparams"))
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "run", data, epochs=1)
    r = run_tool(TRAIN, cfg, f"Global.pretrained_model={tmp_path / 'wide'}")
    assert r.returncode == 1
    assert "Global.pretrained_model" in r.stderr and "mis-shaped: blocks" in r.stderr
