"""Two processes on CPU through the real `python -m paddle.distributed.launch` (gloo)."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from engine_helpers import EVAL, ROOT, TRAIN, env, tiny_config
from ppmobilenet.engine.checkpoint import read_states


def test_two_cpu_processes_train_in_step(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, batch=16, workers=1)
    logs = tmp_path / "launch-logs"
    r = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                        "--log_dir", str(logs), TRAIN, "-c", cfg],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env())
    worker = [(logs / f"workerlog.{i}").read_text() for i in (0, 1)]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + worker[0][-3000:] + worker[1][-3000:]

    # both ranks joined one job and report the global batch
    for w in worker:
        assert "2 process(es); global batch 16 x 2 = 32" in w, w[-2000:]
    # the gradients were averaged: both ranks end with bit-identical weights and BN statistics
    digests = [re.findall(r"weights digest \(rank (\d)\): (\w+)", w) for w in worker]
    assert [d[0][0] for d in digests] == ["0", "1"], digests
    assert digests[0][0][1] == digests[1][0][1], digests

    # rank 0 alone wrote: one checkpoint set per name, one VisualDL file, a train.log of rank 0
    assert sorted(p.name for p in out.glob("latest.*")) == ["latest.pdopt", "latest.pdparams",
                                                             "latest.pdstates"]
    assert len(glob.glob(str(out / "vdl" / "vdlrecords*"))) == 1
    log = (out / "train.log").read_text()
    assert "[rank 1]" not in log and "weights digest (rank 0)" in log
    assert not glob.glob(str(out / "**" / "*.tmp.*"), recursive=True)

    # 192 images over 2 ranks x 16 = 6 steps; evaluation counted every val image exactly once
    states = read_states(out / "latest")
    assert states["global_step"] == 6 and states["world_size"] == 2
    assert re.search(r"eval epoch \[1/1\] .*\(96 images\)", log), log[-2000:]


def _launch(cfg, logs, *overrides, kill_at=None, timeout=900):
    """tools/train.py under `paddle.distributed.launch --nproc_per_node 2` (worker logs in
    `logs`). kill_at: SIGKILL the whole launch when rank 0's log has a line matching it.
    -> (return code or None when killed, [rank 0 log, rank 1 log])."""
    args = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
            "--log_dir", str(logs), TRAIN, "-c", str(cfg)] + (["-o", *overrides] if overrides else [])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=env(), start_new_session=True)
    rx, deadline, rc = re.compile(kill_at) if kill_at else None, time.time() + timeout, None
    try:
        while time.time() < deadline:
            rc = proc.poll()
            if rx is not None and logs.joinpath("workerlog.0").exists() and \
                    rx.search(logs.joinpath("workerlog.0").read_text(errors="replace")):
                os.killpg(proc.pid, signal.SIGKILL)   # the launcher and both trainers
                proc.wait(30)
                rc = None
                break
            if rc is not None:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the launch did not end within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    worker = [(logs / f"workerlog.{i}").read_text(errors="replace") for i in (0, 1)]
    if kill_at is not None:
        assert rc is None, f"the launch ended (rc {rc}) before {kill_at!r}:\n{worker[0][-3000:]}"
    return rc, worker


@pytest.mark.slow
def test_two_process_resume_with_a_null_seed_and_uneven_eval_shards(tmp_path, data):
    """Two processes, Global.seed null, 33 validation images (rank 0 reads 17, rank 1 16: one
    evaluation batch fewer). Rank 0 draws the seed and both ranks use it; the launch is killed
    after epoch 1 and resumed with 2 processes, which keep the seed; the run then ends with the
    weights of an uninterrupted 2-process run given that seed, bit for bit, and its evaluation
    counted every image once: the same top-1 as one process evaluating the saved weights."""
    val = tmp_path / "val33.txt"
    with open(data["val"]) as f:
        val.write_text("".join([ln for ln in f if ln.strip()][:33]))
    shards = dict(data, val=str(val))
    glob_ = {"seed": None, "cpu_kernels": False, "cpu_packed_depthwise": False}  # one-process eval: Paddle's ops
    cut = tmp_path / "cut"
    cfg = tiny_config(tmp_path / "cut.yaml", cut, shards, epochs=2, batch=16, workers=1, Global=glob_)
    _, worker = _launch(cfg, tmp_path / "logs-cut", kill_at=r"saved .*latest \(epoch 1")
    seeds = [re.findall(r"Global.seed is null: this run uses seed (\d+)", w) for w in worker]
    assert seeds[0] and seeds[0] == seeds[1], seeds          # rank 0's draw, broadcast
    seed = int(seeds[0][0])
    assert read_states(cut / "latest")["seed"] == seed

    rc, worker = _launch(cfg, tmp_path / "logs-resume", f"Global.checkpoints={cut / 'latest'}")
    assert rc == 0, worker[0][-3000:] + worker[1][-3000:]
    for w in worker:
        assert f"resuming with the checkpoint's seed {seed}" in w and "global step 6" in w, w[-2000:]
        assert "this run uses seed" not in w
    digests = [re.findall(r"weights digest \(rank \d\): (\w+)", w) for w in worker]
    assert digests[0] and digests[0] == digests[1], digests
    log = (cut / "train.log").read_text()
    assert re.findall(r"eval epoch \[2/2\] .*\((\d+) images\)", log) == ["33"], log[-2000:]

    ref = tiny_config(tmp_path / "ref.yaml", tmp_path / "ref", shards, epochs=2, batch=16, workers=1,
                      Global=dict(glob_, seed=seed))
    rc, worker = _launch(ref, tmp_path / "logs-ref")
    assert rc == 0, worker[0][-3000:]
    a = paddle.load(str(tmp_path / "ref" / "latest.pdparams"))
    b = paddle.load(str(cut / "latest.pdparams"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)

    last = read_states(cut / "latest")["last_eval"]
    r = subprocess.run([sys.executable, EVAL, "-c", cfg, "-o", f"Global.pretrained_model={cut / 'latest'}"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=env())
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"eval: loss ([\d.]+) top1 ([\d.]+) .*\((\d+) images\)", r.stdout + r.stderr)
    assert m and int(m.group(3)) == 33, r.stdout[-2000:]
    assert f"{last['top1']:.4f}" == m.group(2) and last["samples"] == 33
    assert abs(last["loss"] - float(m.group(1))) < 1e-4       # the sum over ranks, reordered
