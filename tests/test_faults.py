"""Faults injected into real runs: damaged checkpoint files, a full disk during a save, data loader
workers that die, and SIGKILL at random points of training followed by resumes.

Each fault must end in a clear error that names the file (no deep Paddle traceback as the only
message) or be survived, and must never lose what was already saved."""
import glob
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import paddle
import pytest

from engine_helpers import (ROOT, TRAIN, assert_same_weights, differing_tensors, env, ok,
                            run_tool, run_until, tiny_config)
from ppmobilenet.engine.checkpoint import (FORMAT_VERSION, PAUSE_ENV, CheckpointError, load_checkpoint,
                                           read_states, save_checkpoint)
from ppmobilenet.errors import PPMobileNetError
from ppmobilenet.models import build_model

# figures for the closing note, printed at the end of the module
FIGURES = {"faults injected": 0, "kills": 0, "resumes": 0}


def teardown_module(module):
    print("\nfault figures: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))


# ------------------------------------------------------------------ damaged checkpoint files

def _net(scale=0.25):
    return build_model("mobilenet_v1", class_dim=10, scale=scale, head="classic")


def _trained_set(prefix, scale=0.25, ema=False):
    """A real checkpoint set after one optimizer step (so .pdopt holds velocities)."""
    paddle.seed(1)
    model = _net(scale)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    opt.step()
    opt.clear_grad()
    extra = {"ema": model.state_dict()} if ema else {}
    save_checkpoint(prefix, model, opt, {"epoch": 1, "global_step": 1}, **extra)
    return model


def _load(prefix, scale=0.25):
    model = _net(scale)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    return load_checkpoint(prefix, model, opt)


def _clear_error(info, *names):
    FIGURES["faults injected"] += 1
    msg = str(info.value)
    assert isinstance(info.value, PPMobileNetError) and msg.strip()
    for name in names:
        assert name in msg, f"{name!r} not in {msg!r}"
    return msg


def test_truncated_pdparams_in_a_set_is_named(tmp_path):
    _trained_set(tmp_path / "latest")
    data = (tmp_path / "latest.pdparams").read_bytes()
    (tmp_path / "latest.pdparams").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path / "latest")
    _clear_error(info, str(tmp_path / "latest.pdparams"), "CRC")


def test_truncated_pdparams_as_pretrained_is_named(tmp_path):
    from ppmobilenet.weights import load_pretrained
    model = _trained_set(tmp_path / "w")
    paddle.save(model.state_dict(), str(tmp_path / "w.pdparams"))
    data = (tmp_path / "w.pdparams").read_bytes()
    (tmp_path / "w.pdparams").write_bytes(data[:1000])
    with pytest.raises(CheckpointError) as info:
        load_pretrained(_net(), str(tmp_path / "w.pdparams"))
    _clear_error(info, f"cannot read {tmp_path / 'w.pdparams'}")


def test_pdopt_from_another_model_is_named(tmp_path):
    _trained_set(tmp_path / "a")
    _trained_set(tmp_path / "b", scale=0.5)
    shutil.copy(tmp_path / "b.pdopt", tmp_path / "a.pdopt")
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path / "a")
    _clear_error(info, str(tmp_path / "a.pdopt"))


def test_pdopt_from_another_model_with_its_crc_recorded_is_named(tmp_path):
    """Even when .pdstates vouches for the foreign .pdopt (a set re-saved by hand), the shapes
    are checked at load: not a Paddle AssertionError at the first optimizer step."""
    from ppmobilenet.engine import checkpoint as ckpt
    _trained_set(tmp_path / "a")
    _trained_set(tmp_path / "b", scale=0.5)
    shutil.copy(tmp_path / "b.pdopt", tmp_path / "a.pdopt")
    states = ckpt.read_states(tmp_path / "b")       # a valid states file of the same format
    states["files"] = {s: ckpt._crc(str(tmp_path / f"a{s}")) for s in (".pdparams", ".pdopt")}
    ckpt.atomic_save(states, str(tmp_path / "a.pdstates"))
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path / "a")
    _clear_error(info, str(tmp_path / "a.pdopt"), "conv1.conv.weight")


def test_pdstates_from_a_newer_format_is_named(tmp_path):
    from ppmobilenet.engine import checkpoint as ckpt
    _trained_set(tmp_path / "latest")
    states = ckpt.read_states(tmp_path / "latest")
    states["format_version"] = FORMAT_VERSION + 1
    ckpt.atomic_save(states, str(tmp_path / "latest.pdstates"))
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path / "latest")
    _clear_error(info, str(tmp_path / "latest.pdstates"), "newer")


def test_pdstates_without_a_crc_trailer_still_loads_with_its_other_checks(tmp_path):
    """A .pdstates without the trailer (a bare paddle.save pickle of the states) loads, and the
    CRCs it records of its companion files are still checked (docs/reliability.md: "loaded
    with the checks they have")."""
    from ppmobilenet.engine import checkpoint as ckpt
    model = _trained_set(tmp_path / "latest")
    states = ckpt.read_states(tmp_path / "latest")
    data = (tmp_path / "latest.pdstates").read_bytes()
    assert ckpt.TRAILER.search(data)                   # a current set has the trailer
    paddle.save(states, str(tmp_path / "latest.pdstates"))
    assert not ckpt.TRAILER.search((tmp_path / "latest.pdstates").read_bytes())
    fresh = _net()
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=fresh.parameters())
    assert load_checkpoint(tmp_path / "latest", fresh, opt)["epoch"] == 1
    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    shutil.copy(tmp_path / "latest.pdparams", tmp_path / "good.pdparams")
    blob = bytearray((tmp_path / "latest.pdparams").read_bytes())
    blob[len(blob) * 2 // 3] ^= 0x10
    (tmp_path / "latest.pdparams").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError) as info:       # the companion CRCs still count
        _load(tmp_path / "latest")
    _clear_error(info, str(tmp_path / "latest.pdparams"), "CRC")


@pytest.mark.parametrize("suffix", [".pdparams", ".pdopt", ".pdstates"])
def test_one_flipped_byte_is_a_checksum_error_naming_the_file(tmp_path, suffix):
    _trained_set(tmp_path / "latest")
    path = tmp_path / f"latest{suffix}"
    data = bytearray(path.read_bytes())
    # a byte in the middle of the tensor data (a float changes, the pickle still loads)
    data[len(data) * 2 // 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        _load(tmp_path / "latest")
    _clear_error(info, str(path), "CRC")


def test_flipped_byte_in_the_ema_file_is_named(tmp_path):
    from ppmobilenet.engine.ema import ModelEMA
    paddle.seed(1)
    model = _net()
    ema = ModelEMA(model, 0.9)
    save_checkpoint(tmp_path / "latest", model, None, {"epoch": 1}, ema=ema)
    path = tmp_path / "latest.pdema"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        read_states(tmp_path / "latest")
    _clear_error(info, str(path), "CRC")


def test_kill_between_renames_is_finished_at_load(tmp_path):
    """A process that dies after renaming some files of a new set but not its .pdstates: the load
    completes the set from the temp files the save had fully written (so `latest` resumes)."""
    _trained_set(tmp_path / "latest")
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        import paddle
        from ppmobilenet.engine import checkpoint as ckpt
        from ppmobilenet.models import build_model
        paddle.seed(2)
        model = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if dst.endswith(".pdparams"):
                os._exit(9)                  # dies right after the first rename
        os.replace = replace                 # what ppmobilenet.io.replace_atomic calls
        ckpt.save_checkpoint({str(tmp_path / 'latest')!r}, model, None, {{"epoch": 2}})
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    FIGURES["faults injected"] += 1
    assert r.returncode == 9, r.stderr
    assert glob.glob(str(tmp_path / "latest.pdstates.tmp.*"))
    states = read_states(tmp_path / "latest")         # no error: the new set was completed
    assert states["epoch"] == 2 and ".pdopt" not in states["files"]
    assert not glob.glob(str(tmp_path / "latest.*.tmp.*"))
    paddle.seed(2)
    want = _net()
    got = {k: v.numpy() for k, v in paddle.load(str(tmp_path / "latest.pdparams")).items()}
    assert all(np.array_equal(got[k], v.numpy()) for k, v in want.state_dict().items())


# ------------------------------------------------------------------ a full disk during a save

def _file_size_limit(nbytes):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.mark.slow
def test_full_disk_during_a_save_stops_cleanly_and_loses_nothing(tmp_path, data):
    """Epoch 1 is saved; epoch 2 runs under a file-size limit smaller than a .pdparams, so its
    saves fail half-written: the run stops with a message naming the file, the epoch-1 set still
    loads, no temp file is left, and resuming from it ends where an uninterrupted run ends."""
    # workers=0: the limit is inherited by loader workers, whose shared memory it also breaks
    # (test_batch_handoff_failure_is_a_clear_error_not_a_hang covers that)
    ref = tiny_config(tmp_path / "ref.yaml", tmp_path / "ref", data, epochs=2, workers=0)
    ok(run_tool(TRAIN, ref))
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "run.yaml", out, data, epochs=2, workers=0)
    run_until(cfg, r"saved .*latest \(epoch 1")          # the same schedule as ref, stopped
    before = {p: open(p, "rb").read() for p in glob.glob(str(out / "*.pd*"))}

    r = subprocess.run([sys.executable, TRAIN, "-c", cfg, "-o", f"Global.checkpoints={out / 'latest'}"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=env(), preexec_fn=_file_size_limit(200_000))
    FIGURES["faults injected"] += 1
    assert r.returncode == 1, f"rc {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    msg = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert msg and re.search(rf"{re.escape(str(out))}/\w+\.pdparams", msg[0]), r.stderr[-2000:]
    assert "File too large" in msg[0] or "No space" in msg[0]

    assert not glob.glob(str(out / "*.tmp.*"))
    after = {p: open(p, "rb").read() for p in glob.glob(str(out / "*.pd*"))}
    assert after == before                           # not one byte of the saved sets changed
    assert _load(out / "latest")["epoch"] == 1

    ok(run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'latest'}"))
    assert_same_weights(tmp_path / "ref" / "latest", out / "latest")


# ------------------------------------------------------------------ data loader workers that die

# A worker-side condition, then what the main process does with the batches. `{when}` runs in
# the worker before each sample (`i`: the index); `{body}` runs in the main process per batch.
WORKER_SCRIPT = """
import faulthandler, os, signal, sys, time
sys.path.insert(0, {root!r})
import paddle
faulthandler.register(signal.SIGUSR1, all_threads=True)    # paddle takes SIGABRT for itself
from ppmobilenet.config import load_config
from ppmobilenet.data import DataError, build_dataloader, build_dataset

cfg = load_config({config!r})
ds = build_dataset(cfg, "Train")
read = type(ds).__getitem__
FLAG = {flag!r}

class Worker(type(ds)):
    def __getitem__(self, i):
        if paddle.io.get_worker_info() is not None:
            {when}
        return read(self, i)

ds.__class__ = Worker
in_body = False
loader = build_dataloader(cfg, "Train", dataset=ds)
try:
    for _ in loader:
        in_body = True
        {body}
        in_body = False
except DataError as e:
    print("in the body:", in_body)
    print("DataError:", e)
    sys.exit(1)
print("no error")
"""

DIE = {"SIGKILL": "os.kill(os.getpid(), signal.SIGKILL)", "exit": "os._exit(3)"}


def _worker_script(tmp_path, data, when, body="pass"):
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "out", data, batch=8, workers=2)
    script = tmp_path / "w.py"
    script.write_text(WORKER_SCRIPT.format(root=ROOT, config=cfg, flag=str(tmp_path / "flag"),
                                           when=when, body=body))
    return script


def _run_or_dump(script, timeout=120, **kwargs):
    """Run a WORKER_SCRIPT; a hang fails the test with every thread of the child, as faulthandler
    prints them on SIGUSR1, instead of a bare TimeoutExpired. Its workers die with it."""
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env(), start_new_session=True, **kwargs)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGUSR1)
        time.sleep(2)
        os.killpg(p.pid, signal.SIGKILL)           # live workers would keep the pipes open
        out, err = p.communicate()
        pytest.fail(f"hung for {timeout} s; its threads:\n{err[-8000:]}\nstdout:\n{out[-2000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.parametrize("how, said", [("SIGKILL", "killed by SIGKILL"), ("exit", "exited with code 3")])
def test_dead_loader_worker_is_a_clear_error_not_a_hang(tmp_path, data, how, said):
    r = _run_or_dump(_worker_script(tmp_path, data, f"if i == 9: {DIE[how]}"))
    FIGURES["faults injected"] += 1
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert "DataError: DataLoader.Train: a data loader worker process died: pid" in r.stdout
    assert said in r.stdout and "num_workers" in r.stdout
    # noticed by the watch at once, not by paddle's reader thread after 5 s of silence
    assert "exit unexpectedly" not in r.stderr, r.stderr[-3000:]


def test_dead_loader_worker_never_interrupts_the_step(tmp_path, data):
    """A worker dies while the main process is inside a step (here: sleeping in the loop body).
    Paddle's SIGCHLD handler would raise in the middle of that step; the error must come from
    the loader instead, when the loop asks for its next batch."""
    script = _worker_script(tmp_path, data, "if os.path.exists(FLAG): os.kill(os.getpid(), signal.SIGKILL)",
                            body="open(FLAG, 'w').close(); time.sleep(3)")
    r = _run_or_dump(script)
    FIGURES["faults injected"] += 1
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert "killed by SIGKILL" in r.stdout, r.stdout
    assert "in the body: False" in r.stdout, r.stdout


@pytest.mark.slow
def test_worker_stuck_in_a_read_does_not_hold_the_exit(tmp_path, data):
    """The loop stops early (a break) while a worker hangs in a read (a dead network mount):
    the loop ends after a bounded wait and the worker is ended, where paddle's shutdown would
    join it for ever."""
    stuck = tmp_path / "stuck.pid"
    script = _worker_script(tmp_path, data, f"if os.path.exists(FLAG): open({str(stuck)!r}, 'w').write(str(os.getpid())); "
                                            f"time.sleep(3600)",
                            body="open(FLAG, 'w').close(); time.sleep(1); break")
    r = _run_or_dump(script, timeout=90)
    FIGURES["faults injected"] += 1
    assert r.returncode == 0 and "no error" in r.stdout, r.stdout + r.stderr[-3000:]
    pid = int(stuck.read_text())              # the worker did hang in its read ...
    assert _gone(pid), f"worker {pid} still runs"      # ... and was ended


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"    # a zombie not yet reaped
    except OSError:
        return True


def test_batch_handoff_failure_is_a_clear_error_not_a_hang(tmp_path, data):
    """A worker whose batch cannot be put into shared memory (here a file-size limit makes the
    ftruncate of the shared memory file fail; /dev/shm full or too many open files do the
    same): multiprocessing drops the batch with a printed traceback and Paddle's loader waits
    for it for ever. The worker now exits and the loader says why."""
    r = _run_or_dump(_worker_script(tmp_path, data, "pass"), preexec_fn=_file_size_limit(50_000))
    FIGURES["faults injected"] += 1
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert "could not hand a batch to the main process" in r.stdout, r.stdout
    assert "use_shared_memory=false" in r.stdout


def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def test_training_stops_cleanly_when_a_worker_is_killed(tmp_path, data):
    """The OOM killer's way: SIGKILL to one loader worker of a running tools/train.py."""
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "out", data, epochs=2, batch=8, workers=2)
    proc = subprocess.Popen([sys.executable, TRAIN, "-c", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env())
    lines, killed, deadline = [], None, time.time() + 240
    try:
        for line in proc.stdout:
            lines.append(line)
            if killed is None and "iter [1/" in line:
                killed = _children(proc.pid)[0]
                os.kill(killed, signal.SIGKILL)
                FIGURES["faults injected"] += 1
            if time.time() > deadline:
                break
        rc = proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines)
    assert killed is not None, out[-3000:]
    assert rc == 1, f"rc {rc}\n{out[-3000:]}"
    err = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert err and "a data loader worker process died" in err[0] and str(killed) in err[0], out[-3000:]
    assert "Traceback" not in out


def test_resume_from_a_set_at_the_last_step_brings_latest_up_to_it(tmp_path, data):
    """A kill between an epoch's epoch_N save and its latest save leaves `latest` one epoch behind;
    resuming from epoch_N (the newest set) trains nothing, but `latest` must end up equal to it."""
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "run", data, epochs=2, workers=0)
    ok(run_tool(TRAIN, cfg))
    run = tmp_path / "run"
    for suffix in (".pdparams", ".pdopt", ".pdstates"):     # latest as the kill left it: epoch 1's
        shutil.copy(run / f"epoch_1{suffix}", run / f"latest{suffix}")
    r = ok(run_tool(TRAIN, cfg, f"Global.checkpoints={run / 'epoch_2'}"))
    assert f"{run / 'epoch_2'} is already at the last step: saved it as {run / 'latest'}" in r.stdout
    assert_same_weights(run / "epoch_2", run / "latest")
    assert read_states(run / "latest")["global_step"] == read_states(run / "epoch_2")["global_step"]


def test_a_nan_the_loss_does_not_show_stops_the_run_at_its_first_save(tmp_path, data):
    """A NaN in a BatchNorm scale before a ReLU leaves the loss finite (Paddle's CPU ReLU maps NaN
    to 0) while it spreads through the weights: the first save finds it, names the tensor and
    saves nothing."""
    state = _net().state_dict()
    w = state["conv1.bn.weight"].numpy().copy()
    w[3] = np.nan
    state["conv1.bn.weight"] = paddle.to_tensor(w)
    paddle.save(state, str(tmp_path / "poisoned.pdparams"))
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "run", data, epochs=2, workers=0,
                      Global={"pretrained_model": str(tmp_path / "poisoned.pdparams")})
    r = run_tool(TRAIN, cfg)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    losses = [float(m) for m in re.findall(r"iter \[\d+/\d+\] loss ([\d.]+)", r.stdout)]
    assert losses and all(np.isfinite(losses)), r.stdout[-2000:]   # the loss never showed it
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("error:")]
    assert err and "holds nan or inf" in err[0] and "was not saved" in err[0], r.stdout[-3000:]
    assert not glob.glob(str(tmp_path / "run" / "*.pdparams"))
    FIGURES["faults injected"] += 1


# ------------------------------------------------------------------ SIGKILL at random points

def _run_and_kill(cfg, overrides, rng, done, steps_per_epoch, epochs):
    """Start tools/train.py and SIGKILL its process group at a random point:
    - 20%: a random time after the start (import, data, reading the checkpoint);
    - 25%: inside a save, between its temp files and its renames (saves pause PAUSE_ENV
      seconds there; the k-th save of this run, k random);
    - else: a random delay after a random step of the next epoch or so (a step, evaluation,
      a save). done: the steps already in the checkpoint."""
    args = [sys.executable, TRAIN, "-c", str(cfg)] + (["-o", *overrides] if overrides else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env(**{PAUSE_ENV: 0.2}), start_new_session=True)
    start, kind = time.time(), rng.random()
    if kind < 0.2 or done >= epochs * steps_per_epoch:   # a set of the last step: no step to wait for
        when, pattern, count, what = rng.uniform(0.2, 3.0), None, 0, "after start"
    elif kind < 0.45:
        count = rng.randint(1, 3)
        when, pattern, what = rng.uniform(0.0, 0.15), "temp files written", f"into save #{count}"
    else:
        last = min(epochs * steps_per_epoch, done + steps_per_epoch + 2)
        step, count = rng.randint(done + 1, last), 1
        e, i = (step - 1) // steps_per_epoch + 1, (step - 1) % steps_per_epoch + 1
        when, pattern = rng.uniform(0.0, 0.5), f"epoch [{e}/{epochs}] iter [{i}/{steps_per_epoch}]"
        what = f"after step {step}"
    lines, fired = [], threading.Event()

    def kill():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            fired.set()
    timer = None
    if pattern is None:
        timer = threading.Timer(when, kill)
        timer.start()
    for line in proc.stdout:
        lines.append(line)
        if pattern and pattern in line and timer is None:
            count -= 1
            if count == 0:
                timer = threading.Timer(when, kill)
                timer.start()
    rc = proc.wait(timeout=300)
    if timer is not None:
        timer.cancel()
    where = f"{when:.2f}s {what} ({time.time() - start:.1f}s into the run)"
    return rc, "".join(lines), fired.is_set(), where


RESUMED = re.compile(r"resumed from \S+: epoch (\d+), batch (\d+), global step (\d+)")


def _resumed_at(text):
    """The global step a run said it resumed from, or None."""
    m = RESUMED.search(text)
    return int(m.group(3)) if m else None


def _newest_set(folder):
    """(prefix, global step) of the set with the most training in `folder`, or (None, 0). A kill
    between the best_model and the latest save of an epoch leaves best_model (or epoch_N) newer
    than latest, or the only set: the run goes on from there, as a user would do."""
    best = (None, 0)
    prefixes = {re.sub(r"\.pd\w+(\.tmp\.\d+)?$", "", p) for p in glob.glob(str(folder / "*.pd*"))}
    for prefix in sorted(prefixes):
        try:
            step = read_states(prefix)["global_step"]    # completes a set cut between renames
        except CheckpointError:
            continue                                     # only a half-written save's temp files
        if best[0] is None or step > best[1] or (step == best[1] and prefix.endswith("latest")):
            best = (prefix, step)
    return best


@pytest.mark.slow
def test_ten_sigkills_at_random_points_then_resume_equal_the_uninterrupted_run(tmp_path, data):
    """Chains of runs of one config: each run is SIGKILLed at a random point and the next resumes
    from `latest`, until a run finishes. Every run started on a checkpoint must resume from it
    (from the very step it holds), every chain must resume at least once, and every finished
    chain must end with the uninterrupted run's weights and training state, bit for bit."""
    epochs = 5
    ref = tiny_config(tmp_path / "ref.yaml", tmp_path / "ref", data, epochs=epochs, workers=0)
    ok(run_tool(TRAIN, ref))
    want = read_states(tmp_path / "ref" / "latest")
    out = tmp_path / "cut"
    cfg = tiny_config(tmp_path / "cut.yaml", out, data, epochs=epochs, workers=0)
    steps = want["global_step"] // epochs
    rng = random.Random(20240606)
    kills, chains, log = 0, [], []
    chain = {"kills": 0, "resumes": 0}

    def finish_chain(text):
        assert chain["resumes"] >= 1, f"a chain finished without resuming from a checkpoint: {log}"
        try:
            assert_same_weights(tmp_path / "ref" / "latest", out / "latest")
        except AssertionError as e:        # name the first epoch the chain left the reference at
            first = next((n for n in range(1, epochs + 1) if os.path.exists(out / f"epoch_{n}.pdparams")
                          and differing_tensors(tmp_path / "ref" / f"epoch_{n}", out / f"epoch_{n}")[0]), None)
            raise AssertionError(f"{e}\nfirst epoch set that differs: {first}\n" + "\n".join(log)) from None
        got = read_states(out / "latest")
        for key in ("epoch", "global_step", "best_metric", "best_epoch", "last_eval"):
            assert got[key] == want[key], (key, got[key], want[key])
        chains.append(dict(chain))
        log.append(f"chain {len(chains)} done: {chain['kills']} kills, {chain['resumes']} resumes; "
                   f"weights equal the uninterrupted run's bit for bit")

    for attempt in range(60):
        # ten kills, then the last chain is resumed to its end: once it has something to resume
        if kills >= 10 and (chain["kills"] == 0 or _newest_set(out)[0] is not None):
            break
        prefix, done = _newest_set(out)
        resume = prefix is not None
        overrides = [f"Global.checkpoints={prefix}"] if resume else []
        rc, text, fired, where = _run_and_kill(cfg, overrides, rng, done, steps, epochs)
        assert "Traceback" not in text and "error:" not in text, text[-3000:]
        at = _resumed_at(text)
        if resume and "process(es); global batch" in text:    # the trainer was set up: it resumed
            assert at == done, f"resumed from step {at}, but {prefix} holds step {done}:\n{text[-2000:]}"
        if resume and at is not None:
            assert at == done, f"resumed from step {at}, but {prefix} holds step {done}"
            chain["resumes"] += 1
            FIGURES["resumes"] += 1
        if not fired:                  # the run ended before the kill time: the chain is done
            assert rc == 0, text[-3000:]
            assert not resume or at == done, f"finished without resuming from step {done}:\n{text[-2000:]}"
            finish_chain(text)
            shutil.rmtree(out)
            chain = {"kills": 0, "resumes": 0}
            continue
        kills += 1
        chain["kills"] += 1
        FIGURES["kills"] += 1
        FIGURES["faults injected"] += 1
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
        log.append(f"kill {kills}: {where}; last line: {last[0][-90:]}")
        for states in glob.glob(str(out / "*.pdstates")):   # whatever the moment, every set loads
            _load(states[: -len(".pdstates")])
    assert kills >= 10, log
    if chain["kills"]:                             # the last chain: resume it to the end
        prefix, done = _newest_set(out)
        resume = prefix is not None
        r = ok(run_tool(TRAIN, cfg, *([f"Global.checkpoints={prefix}"] if resume else [])))
        assert _resumed_at(r.stdout) == (done if resume else None), r.stdout[-2000:]
        chain["resumes"] += resume
        FIGURES["resumes"] += resume
        finish_chain(r.stdout)
    print("\n".join(log))
    assert chains and sum(c["kills"] for c in chains) == kills
