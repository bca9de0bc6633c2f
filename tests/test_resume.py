"""Checkpoints and exact resume, through tools/train.py in real subprocesses killed with SIGKILL."""
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from engine_helpers import (ROOT, TRAIN, assert_same_weights, env, ok, run_tool, run_until,
                            tiny_config, vdl_scalars)
from ppmobilenet.engine.checkpoint import (PAUSE_ENV, CheckpointError, load_checkpoint, read_states,
                                           save_checkpoint)


def params(prefix):
    return paddle.load(str(prefix) + ".pdparams")


def assert_same_curves(want_dir, got_dir, tags=("train/loss", "train/lr", "eval/top1")):
    """The VisualDL points: the same steps, the same values (what the user sees)."""
    for tag in tags:
        want, got = vdl_scalars(want_dir, tag), vdl_scalars(got_dir, tag)
        assert got == want, (tag, got, want)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, data):
    full = tiny_config(tmp_path / "full.yaml", tmp_path / "full", data, epochs=3)
    ok(run_tool(TRAIN, full))

    cut_dir = tmp_path / "cut"
    cut = tiny_config(tmp_path / "cut.yaml", cut_dir, data, epochs=3)
    # 6 steps an epoch: killed at step 9, in the middle of epoch 2; latest is from epoch 1
    seen = run_until(cut, r"epoch \[2/3\] iter \[3/6\]")
    assert "saved" in seen and not os.path.exists(cut_dir / "epoch_2.pdparams")
    assert read_states(cut_dir / "latest")["global_step"] == 6

    r = ok(run_tool(TRAIN, cut, f"Global.checkpoints={cut_dir / 'latest'}"))
    assert "resumed from" in r.stdout and "global step 6" in r.stdout
    assert_same_weights(tmp_path / "full" / "latest", cut_dir / "latest")

    a, b = read_states(tmp_path / "full" / "latest"), read_states(cut_dir / "latest")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (3, 18)
    assert (a["best_metric"], a["best_epoch"]) == (b["best_metric"], b["best_epoch"])
    assert a["best_metric"] is not None

    # VisualDL: one record file; steps continue where the checkpoint stopped, no jump back,
    # the records the killed run wrote after its checkpoint are gone, values as uninterrupted
    assert len(glob.glob(str(cut_dir / "vdl" / "vdlrecords*"))) == 1
    assert_same_curves(tmp_path / "full" / "vdl", cut_dir / "vdl")


def test_best_metric_survives_resume(tmp_path, data):
    """PaddleClas resets the best metric to 0 on resume, so the first eval after it overwrites
    best_model. Here a deliberately ruined epoch after the resume must leave it alone. The model
    has an 11th class that no training image has, so it (practically) never predicts it, and
    the evaluation after the resume, where every image is labelled 10, scores 0."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=4, batch=16,
                      Arch={"name": "mobilenet_v1", "class_num": 11, "scale": 0.25, "head": "classic"},
                      Optimizer={"name": "Momentum", "momentum": 0.9,
                                 "lr": {"name": "Cosine", "learning_rate": 0.02}})
    overrides = ["DataLoader.Train.dataset.label_file=null", "DataLoader.Eval.dataset.label_file=null"]
    ok(run_tool(TRAIN, cfg, *overrides))
    before = read_states(out / "best_model")
    best_bytes = (out / "best_model.pdparams").read_bytes()
    assert before["best_metric"] > 0 and before["best_epoch"] >= 1

    with open(data["val"]) as f:
        rows = [ln.split() for ln in f if ln.strip()]
    wrong = tmp_path / "val_wrong.txt"
    wrong.write_text("".join(f"{p} 10\n" for p, _ in rows))
    r = ok(run_tool(TRAIN, cfg, *overrides, f"Global.checkpoints={out / 'latest'}", "Global.epochs=5",
                    f"DataLoader.Eval.dataset.cls_label_path={wrong}"))
    assert f"best top-1 {before['best_metric']:.4f} (epoch {before['best_epoch']})" in r.stdout
    after = read_states(out / "latest")
    assert after["epoch"] == 5 and after["last_eval"]["top1"] == 0.0, after["last_eval"]
    assert (after["best_metric"], after["best_epoch"]) == (before["best_metric"], before["best_epoch"])
    assert (out / "best_model.pdparams").read_bytes() == best_bytes


def test_kill_during_save_leaves_previous_checkpoint_whole(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1,
                      Global={"eval_during_train": False, "save_interval": 100})
    ok(run_tool(TRAIN, cfg))
    old = {s: (out / f"latest{s}").read_bytes() for s in (".pdparams", ".pdopt", ".pdstates")}

    # the epoch-2 save sleeps between writing its temp files and renaming them: kill it there
    run_until(cfg, r"checkpoint .*latest: temp files written", f"Global.checkpoints={out / 'latest'}",
              "Global.epochs=2", extra_env={PAUSE_ENV: 120})
    temps = glob.glob(str(out / "latest.*.tmp.*"))
    assert len(temps) == 3, temps  # the new set was on disk, complete, but not in place
    for s, blob in old.items():
        assert (out / f"latest{s}").read_bytes() == blob, s
    model = _model()
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    assert load_checkpoint(out / "latest", model, opt)["epoch"] == 1

    ok(run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'latest'}", "Global.epochs=2"))
    assert read_states(out / "latest")["epoch"] == 2
    assert not glob.glob(str(out / "latest.*.tmp.*"))  # the next save cleared the leftovers


def test_mixed_checkpoint_set_is_refused(tmp_path):
    """A kill between two renames would pair new weights with old states: the CRCs in .pdstates
    catch it and the message names the file."""
    model = _model()
    save_checkpoint(tmp_path / "a", model, None, {"epoch": 1})
    with paddle.no_grad():
        model.fc.bias.set_value(model.fc.bias + 1.0)
    save_checkpoint(tmp_path / "b", model, None, {"epoch": 2})
    shutil.copy(tmp_path / "b.pdparams", tmp_path / "a.pdparams")
    with pytest.raises(CheckpointError, match=r"a\.pdparams does not belong to .*a\.pdstates"):
        read_states(tmp_path / "a")


@pytest.mark.slow
def test_mid_epoch_save_steps_resume_equals_uninterrupted(tmp_path, data):
    """Global.save_steps writes `latest` inside an epoch; the resume skips the batches already
    seen (build_dataloader start_batch) and still ends where an uninterrupted run ends."""
    full = tiny_config(tmp_path / "full.yaml", tmp_path / "full", data, epochs=2)
    ok(run_tool(TRAIN, full))
    cut_dir = tmp_path / "cut"
    cut = tiny_config(tmp_path / "cut.yaml", cut_dir, data, epochs=2, Global={"save_steps": 4})
    # saves at steps 4, 6 (epoch end) and 8 (= epoch 2, batch 2); killed at step 10
    seen = run_until(cut, r"epoch \[2/2\] iter \[4/6\]")
    assert "inside epoch 2 (batch 2, step 8)" in seen, seen[-2000:]
    st = read_states(cut_dir / "latest")
    assert (st["epoch"], st["batch_in_epoch"], st["global_step"]) == (1, 2, 8)
    r = ok(run_tool(TRAIN, cut, f"Global.checkpoints={cut_dir / 'latest'}"))
    assert "batch 2, global step 8" in r.stdout
    assert_same_weights(tmp_path / "full" / "latest", cut_dir / "latest")
    assert_same_curves(tmp_path / "full" / "vdl", cut_dir / "vdl")


def _resumed(text):
    m = re.search(r"resumed from (\S+): epoch (\d+), batch (\d+), global step (\d+)", text)
    assert m, f"the run did not resume:\n{text[-2000:]}"
    return m.group(1), int(m.group(2)), int(m.group(4))


@pytest.mark.slow
def test_resume_from_epoch_n_and_from_best_model(tmp_path, data):
    """Any prefix of the run resumes exactly, not only `latest`: resumed from epoch_1 (after the
    run had finished), the run trains epochs 2-3 again and ends with the same weights, and its
    VisualDL curves are cut back to epoch 1 and continued (no point twice); a run whose `latest`
    is lost resumes from its best_model."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=3)
    ok(run_tool(TRAIN, cfg))
    curves = {t: vdl_scalars(out / "vdl", t) for t in ("train/loss", "train/lr", "eval/top1")}
    shutil.copytree(out, tmp_path / "ref")
    assert read_states(out / "epoch_1")["global_step"] == 6

    r = ok(run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'epoch_1'}"))
    assert _resumed(r.stdout) == (str(out / "epoch_1"), 1, 6) and "epoch [2/3] iter [1/6]" in r.stdout
    assert_same_weights(tmp_path / "ref" / "latest", out / "latest")
    for tag, want in curves.items():
        assert vdl_scalars(out / "vdl", tag) == want, tag

    cut = tmp_path / "cut"
    cut_cfg = tiny_config(tmp_path / "cut.yaml", cut, data, epochs=3)
    run_until(cut_cfg, r"saved .*latest \(epoch 2")
    best = read_states(cut / "best_model")
    assert best["epoch"] in (1, 2) and best["epoch"] == best["best_epoch"]
    for f in cut.glob("latest.*"):
        f.unlink()                             # latest is lost (a disk error, a bad copy)
    r = ok(run_tool(TRAIN, cut_cfg, f"Global.checkpoints={cut / 'best_model'}"))
    assert _resumed(r.stdout) == (str(cut / "best_model"), best["epoch"], best["global_step"])
    assert_same_weights(tmp_path / "ref" / "latest", cut / "latest")
    a, b = read_states(tmp_path / "ref" / "latest"), read_states(cut / "latest")
    assert (a["epoch"], a["global_step"], a["best_metric"], a["best_epoch"]) == \
        (b["epoch"], b["global_step"], b["best_metric"], b["best_epoch"])


@pytest.mark.slow
def test_null_seed_is_kept_across_a_resume_and_eval_interval_skips_epochs(tmp_path, data):
    """Global.seed: null draws a seed, logs it, writes it into config.yaml and the checkpoint;
    a resume (killed in the middle of epoch 2) takes it from there, so the run ends exactly as
    an uninterrupted run given that seed ends. Global.eval_interval=2 over 3 epochs evaluates
    after epochs 2 and 3 only (the last always), before and after the resume."""
    extra = {"seed": None, "eval_interval": 2}
    cut = tmp_path / "cut"
    cfg = tiny_config(tmp_path / "cut.yaml", cut, data, epochs=3, Global=extra)
    seen = run_until(cfg, r"epoch \[2/3\] iter \[3/6\]")
    m = re.search(r"Global.seed is null: this run uses seed (\d+) \(-o Global.seed=\1 repeats it\)", seen)
    assert m, seen[-2000:]
    seed = int(m.group(1))
    assert read_states(cut / "latest")["seed"] == seed
    with open(cut / "config.yaml") as f:
        assert yaml.safe_load(f)["Global"]["seed"] == seed
    assert "eval epoch" not in seen and read_states(cut / "latest")["last_eval"] is None

    r = ok(run_tool(TRAIN, cfg, f"Global.checkpoints={cut / 'latest'}"))
    assert f"Global.seed is null: resuming with the checkpoint's seed {seed}" in r.stdout
    assert "this run uses seed" not in r.stdout
    assert re.findall(r"eval epoch \[(\d)/3\]", r.stdout) == ["2", "3"], r.stdout[-2000:]
    ref = tiny_config(tmp_path / "ref.yaml", tmp_path / "ref", data, epochs=3,
                      Global={"seed": seed, "eval_interval": 2})
    ok(run_tool(TRAIN, ref))
    assert_same_weights(tmp_path / "ref" / "latest", cut / "latest")
    assert [s for s, _ in vdl_scalars(cut / "vdl", "eval/top1")] == [12, 18]
    assert_same_curves(tmp_path / "ref" / "vdl", cut / "vdl")
    assert read_states(cut / "latest")["best_epoch"] in (2, 3)


@pytest.mark.slow
def test_ema_resumes_exactly_and_converts_to_safetensors(tmp_path, data):
    """With EMA.use_ema, a run killed in the middle of epoch 2 and resumed ends with the
    uninterrupted run's weights and EMA weights, bit for bit (the EMA's update count is part of
    the state); `tools/convert_weights.py <prefix> --ema` then writes the EMA tensors, not the
    raw ones, with the architecture from the .pdstates."""
    ema = {"use_ema": True, "decay": 0.9}
    full = tiny_config(tmp_path / "full.yaml", tmp_path / "full", data, epochs=2, EMA=ema)
    ok(run_tool(TRAIN, full))
    cut = tmp_path / "cut"
    cfg = tiny_config(tmp_path / "cut.yaml", cut, data, epochs=2, EMA=ema)
    run_until(cfg, r"epoch \[2/2\] iter \[2/6\]")
    ok(run_tool(TRAIN, cfg, f"Global.checkpoints={cut / 'latest'}"))
    assert_same_weights(tmp_path / "full" / "latest", cut / "latest")
    assert_same_weights(tmp_path / "full" / "latest", cut / "latest", suffix=".pdema")

    dest = tmp_path / "ema.safetensors"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"),
                        str(cut / "latest"), "--ema", "--out", str(dest)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    from ppmobilenet.weights import read_safe_weights
    tensors, meta = read_safe_weights(str(dest))
    ema_state, raw = paddle.load(str(cut / "latest.pdema")), params(cut / "latest")
    assert sorted(tensors) == sorted(ema_state)
    assert all(np.array_equal(np.asarray(tensors[k]), ema_state[k].numpy()) for k in tensors)
    assert any(not np.array_equal(np.asarray(tensors[k]), raw[k].numpy()) for k in tensors)
    assert (meta["model"], meta["class_num"]) == ("mobilenet_v1", "10"), meta


def _model():
    from ppmobilenet.models import build_model
    return build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
