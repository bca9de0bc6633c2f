"""Checkpoints and exact resume, through tools/train.py in real subprocesses killed with SIGKILL."""
import glob
import os
import shutil
import sys
import textwrap

import numpy as np
import paddle
import pytest

from engine_helpers import ROOT, TRAIN, demo_subset, run_tool, run_until, tiny_config, vdl_scalars
from ppmobilenet.engine.checkpoint import (PAUSE_ENV, CheckpointError, load_checkpoint, read_states,
                                           save_checkpoint)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "engine-cache"
    return demo_subset(tmp_path_factory.mktemp("resume-data"), str(cache))


def params(prefix):
    return paddle.load(str(prefix) + ".pdparams")


def assert_same_weights(a, b, atol=1e-6):
    pa, pb = params(a), params(b)
    assert sorted(pa) == sorted(pb)
    worst = max(float(np.abs(pa[k].numpy() - pb[k].numpy()).max()) for k in pa)
    assert worst <= atol, f"weights differ by {worst}"


def ok(r):
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


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
    for tag in ("train/loss", "train/lr", "eval/top1"):
        want, got = vdl_scalars(tmp_path / "full" / "vdl", tag), vdl_scalars(cut_dir / "vdl", tag)
        assert [s for s, _ in got] == [s for s, _ in want], tag
        assert np.allclose([v for _, v in got], [v for _, v in want], atol=1e-5), tag


def test_best_metric_survives_resume(tmp_path, data):
    """PaddleClas resets the best metric to 0 on resume, so the first eval after it overwrites
    best_model. Here a deliberately ruined epoch after the resume must leave it alone."""
    out = tmp_path / "run"
    # long and gentle enough to learn well above chance (~40%): a model near chance scores the
    # same on shifted labels, and float rounding alone could then decide the test
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=6, batch=16,
                      Optimizer={"name": "Momentum", "momentum": 0.9,
                                 "lr": {"name": "Cosine", "learning_rate": 0.02}})
    ok(run_tool(TRAIN, cfg))
    before = read_states(out / "best_model")
    best_bytes = (out / "best_model.pdparams").read_bytes()
    assert before["best_metric"] > 0.25

    # the seventh epoch is evaluated on the val images with every label shifted: top-1 near 0
    with open(data["val"]) as f:
        rows = [ln.split() for ln in f if ln.strip()]
    wrong = tmp_path / "val_wrong.txt"
    wrong.write_text("".join(f"{p} {(int(l) + 1) % 10}\n" for p, l in rows))
    r = ok(run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'latest'}", "Global.epochs=7",
                    f"DataLoader.Eval.dataset.cls_label_path={wrong}"))
    assert f"best top-1 {before['best_metric']:.4f} (epoch {before['best_epoch']})" in r.stdout
    after = read_states(out / "latest")
    assert after["epoch"] == 7 and after["last_eval"]["top1"] < before["best_metric"]
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
    driver = tmp_path / "drive.py"
    driver.write_text(textwrap.dedent(f"""
        import argparse, sys
        sys.path.insert(0, {ROOT!r})
        from ppmobilenet.cpu import configure_cpu
        configure_cpu()
        from ppmobilenet.config import add_config_args, load_config
        from ppmobilenet.engine import train
        args = add_config_args(argparse.ArgumentParser()).parse_args()
        cfg = load_config(args.config, args.override)
        cfg["Global"]["save_steps"] = 4
        train(cfg)
    """))
    full = tiny_config(tmp_path / "full.yaml", tmp_path / "full", data, epochs=2)
    ok(run_tool(TRAIN, full))
    cut_dir = tmp_path / "cut"
    cut = tiny_config(tmp_path / "cut.yaml", cut_dir, data, epochs=2)
    # saves at steps 4, 6 (epoch end) and 8 (= epoch 2, batch 2); killed at step 10
    run_until(cut, r"epoch \[2/2\] iter \[4/6\]", script=str(driver))
    st = read_states(cut_dir / "latest")
    assert (st["epoch"], st["batch_in_epoch"], st["global_step"]) == (1, 2, 8)
    r = ok(run_tool(str(driver), cut, f"Global.checkpoints={cut_dir / 'latest'}"))
    assert "batch 2, global step 8" in r.stdout
    assert_same_weights(tmp_path / "full" / "latest", cut_dir / "latest")
    want, got = vdl_scalars(tmp_path / "full" / "vdl", "train/lr"), vdl_scalars(cut_dir / "vdl", "train/lr")
    assert [s for s, _ in got] == [s for s, _ in want]


def _model():
    from ppmobilenet.models import build_model
    return build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
