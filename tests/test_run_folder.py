"""One run per output folder, through tools/train.py: a new run refuses a folder holding another
run's checkpoints (and says the three ways forward), a resume from inside it goes on, the
overwrite key replaces the old run; a second process into a folder in use fails at once, a
SIGKILLed run leaves no stuck lock, the ranks of one launch share the folder while another
launch is refused as a whole; and paths read from a checkpoint stay inside the run's folder."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from engine_helpers import (ROOT, TRAIN, env, error_line, ok, run_tool, tiny_config,
                            train_in_process)
from ppmobilenet.config import ConfigError
from ppmobilenet.engine.checkpoint import CheckpointError, atomic_save, read_states
from ppmobilenet.engine.run_folder import claim_output_dir
from ppmobilenet.errors import PPMobileNetError


def sets(out):
    return sorted({p.name.split(".")[0] for p in out.glob("*.pdstates")})


@pytest.mark.slow
def test_a_new_run_refuses_another_runs_folder_resume_and_overwrite_go_on(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1)
    ok(run_tool(TRAIN, cfg))
    best = (out / "best_model.pdparams").read_bytes()
    config = (out / "config.yaml").read_text()

    r = run_tool(TRAIN, cfg, "Global.seed=7")  # a fresh run, another seed: it would replace best_model
    line = error_line(r)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"Global.output_dir={out} holds another run's checkpoints (best_model, epoch_1, latest)" in line
    for way in (f"-o Global.checkpoints={out / 'latest'}", "-o Global.output_dir=", "-o Global.overwrite_output=true"):
        assert way in line, (way, line)
    assert (out / "best_model.pdparams").read_bytes() == best and (out / "config.yaml").read_text() == config

    # a resume from inside the folder continues that run
    ok(run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'latest'}", "Global.epochs=2"))
    assert sets(out) == ["best_model", "epoch_1", "epoch_2", "latest"]
    # a resume from another folder into this one would overwrite it too
    other = tmp_path / "other"
    ok(run_tool(TRAIN, cfg, f"Global.output_dir={other}"))
    r = run_tool(TRAIN, cfg, f"Global.checkpoints={other / 'latest'}", "Global.epochs=2")
    assert r.returncode == 2 and "holds another run's checkpoints" in error_line(r)

    # the overwrite key: the new run's checkpoints replace every set of the old one
    r = ok(run_tool(TRAIN, cfg, "Global.overwrite_output=true", "Global.seed=7"))
    assert "removed the replaced run's checkpoints" in r.stdout
    assert sets(out) == ["best_model", "epoch_1", "latest"]      # epoch_2 of the old run is gone
    assert read_states(out / "latest")["seed"] == 7 and read_states(out / "latest")["global_step"] == 6


def test_the_hint_names_the_newest_set_that_exists(tmp_path, data):
    """"continue that run" names a set the folder holds: the newest by global_step in its .pdstates
    (latest on a tie); no such hint when no set loads."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, workers=0)
    train_in_process(cfg)                                   # best_model, epoch_1, latest: step 6 each

    def hint():
        with pytest.raises(ConfigError) as e:
            claim_output_dir(str(out))
        msg = str(e.value)
        assert "-o Global.output_dir=..." in msg and "-o Global.overwrite_output=true" in msg, msg
        found = re.findall(r"continue that run: -o Global.checkpoints=(\S+);", msg)
        return found[0] if found else None

    assert hint() == str(out / "latest")                     # a tie: latest
    _set_step(out / "epoch_1", 9)
    assert hint() == str(out / "epoch_1")                    # newer than latest
    _remove_set(out / "latest")
    _remove_set(out / "epoch_1")
    assert hint() == str(out / "best_model")                 # the only set left
    (out / "epoch_1.pdparams").write_bytes(b"bare weights")  # a set without .pdstates: not resumable
    assert hint() == str(out / "best_model")
    _set_step(out / "best_model", 3)
    (out / "best_model.pdparams").write_bytes(b"damaged")     # its CRC no longer matches
    assert hint() is None


def test_an_overwrite_that_fails_before_its_first_save_loses_nothing(tmp_path, data):
    """Global.overwrite_output removes the old run's sets at the new run's first save, not at its
    start: a run that fails before then leaves every old set as it was, and the folder free."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, workers=0)
    train_in_process(cfg)
    before = {p.name: p.read_bytes() for p in out.glob("*.pd*")}
    assert sets(out) == ["best_model", "epoch_1", "latest"]
    with pytest.raises(PPMobileNetError, match="missing.pdparams"):
        train_in_process(cfg, "Global.overwrite_output=true", f"Global.pretrained_model={tmp_path / 'missing.pdparams'}")
    assert {p.name: p.read_bytes() for p in out.glob("*.pd*")} == before
    claim_output_dir(str(out), str(out / "latest")).release()   # unlocked, and latest still resumes
    assert read_states(out / "latest")["global_step"] == 6


def _set_step(prefix, step):
    states = read_states(prefix)
    states["global_step"] = step
    atomic_save(states, f"{prefix}.pdstates")                # a valid set: CRCs recomputed


def _remove_set(prefix):
    for path in glob.glob(f"{prefix}.pd*"):
        os.remove(path)


def _start(cfg, *overrides, extra_env=None):
    args = [sys.executable, TRAIN, "-c", str(cfg)] + (["-o", *overrides] if overrides else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=env(**(extra_env or {})), start_new_session=True)


def _wait_for(proc, text, timeout=300):
    deadline, seen = time.time() + timeout, []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
        if time.time() > deadline:
            break
    raise AssertionError(f"no line with {text!r} (rc {proc.poll()}):\n{''.join(seen)[-3000:]}")


def _holding_run(cfg):
    """tools/train.py paused inside its first save (the checkpoint module's test hook): a run that
    holds the folder for as long as the test needs."""
    proc = _start(cfg, extra_env={"PPMOBILENET_SAVE_PAUSE": "300"})
    _wait_for(proc, "pausing 300")
    return proc


@pytest.mark.slow
def test_a_second_process_fails_at_once_and_a_killed_run_leaves_no_lock(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=3)
    first = _holding_run(cfg)
    try:
        for overrides in ((), (f"Global.checkpoints={out / 'latest'}",), ("Global.overwrite_output=true",)):
            t0 = time.time()
            r = run_tool(TRAIN, cfg, *overrides, timeout=120)
            line = error_line(r)
            assert r.returncode == 1, (overrides, r.stdout[-2000:], r.stderr[-2000:])
            assert line.startswith(f"output folder in use: Global.output_dir={out} is in use: "
                                   f"process {first.pid} is training into it"), line
            assert time.time() - t0 < 60
        log = (out / "train.log").read_text()
        assert log.count("device cpu, 1 process(es)") == 1   # the refused ones wrote nothing there
    finally:
        os.kill(first.pid, signal.SIGKILL)   # the trainer alone: its loader workers follow it
        first.wait(30)
    # the kernel dropped the lock with the process: the next run trains into the folder
    ok(run_tool(TRAIN, cfg, "Global.epochs=1", timeout=300))
    assert read_states(out / "latest")["global_step"] == 6


@pytest.mark.slow
def test_the_ranks_of_one_launch_share_the_folder_another_launch_is_refused(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, batch=16, workers=0)
    first = _holding_run(cfg)
    try:
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                            "--log_dir", str(tmp_path / "logs"), TRAIN, "-c", cfg],
                           capture_output=True, text=True, timeout=300, cwd=ROOT, env=env())
        assert r.returncode != 0 and time.time() - t0 < 120
        logs = [(tmp_path / "logs" / f"workerlog.{i}").read_text() for i in (0, 1)]
        assert f"process {first.pid} is training into it" in logs[0], logs[0][-2000:]
        assert f"rank 0 could not claim Global.output_dir={out}" in logs[1], logs[1][-2000:]
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    # the same launch into a free folder: rank 1 does not take rank 0's claim for another run's
    free = tmp_path / "free"
    r = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                        "--log_dir", str(tmp_path / "logs2"), TRAIN, "-c", cfg, "-o", f"Global.output_dir={free}"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env())
    assert r.returncode == 0, (tmp_path / "logs2" / "workerlog.1").read_text()[-3000:]
    assert read_states(free / "latest")["world_size"] == 2


@pytest.mark.parametrize("name", ["../../victim.txt", "/{victim}", "vdlrecords.1.log/../../../victim.txt"])
def test_a_checkpoint_cannot_truncate_a_file_outside_the_run(tmp_path, data, name):
    """.pdstates records where the VisualDL file ended; a resume cuts the file back there. A
    crafted name pointing elsewhere is refused, naming the .pdstates and the key."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, workers=0)
    train_in_process(cfg)
    victim = tmp_path / "victim.txt"
    victim.write_text("x" * 1000)
    states = read_states(out / "latest")
    states["vdl"] = {"file": name.format(victim=victim), "size": 100}
    atomic_save(states, str(out / "latest.pdstates"))   # a valid set: CRCs recomputed
    with pytest.raises(CheckpointError) as e:
        train_in_process(cfg, f"Global.checkpoints={out / 'latest'}", "Global.epochs=2")
    msg = str(e.value)
    assert f"{out / 'latest'}.pdstates" in msg and "vdl.file" in msg and "Global.checkpoints" in msg, msg
    assert victim.read_text() == "x" * 1000
    assert read_states(out / "latest")["epoch"] == 1   # and the run did not go on
