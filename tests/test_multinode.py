"""A two-node job simulated on this machine: two `python -m paddle.distributed.launch --nnodes 2
--master 127.0.0.1:PORT --nproc_per_node 1` invocations, one process each, with log folders of
their own. It trains in step with one two-process launch; losing one rank or one node in the
middle of an epoch ends the whole job within 60 s with a clear message; a resume from `latest`
ends with the weights of an uninterrupted run."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from engine_helpers import ROOT, TRAIN, differing_tensors, env, tiny_config
from process_helpers import proc_table, running, tree

JOB_ENDS_WITHIN_S = 60
LOST = re.compile(r"error: rank (\d) of 2: another process of this job was lost during ([^:]+):")
DIGEST = re.compile(r"weights digest \(rank (\d)\): (\w+)")
FIGURES = {"jobs": 0, "kills": 0, "jobs ended after a loss": 0, "slowest end (s)": 0.0, "resumes": 0,
           "weights lost": 0}


def teardown_module(module):
    print("\nmulti-node figures: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))


def _config(tmp_path, name, data):
    return tiny_config(tmp_path / f"{name}.yaml", tmp_path / name, data, epochs=2, batch=16, workers=1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """The launchers of one job: `nodes` of them with one process each, or one launcher with
    two processes (nodes=1)."""

    def __init__(self, tmp_path, cfg, name, nodes=2, overrides=()):
        self.logs = [tmp_path / f"{name}-logs-node{n}" for n in range(nodes)]
        common = ["--nnodes", "2", "--master", f"127.0.0.1:{_free_port()}", "--nproc_per_node", "1"] \
            if nodes == 2 else ["--nproc_per_node", "2"]
        extra = ["-o", *overrides] if overrides else []
        self.outs = [open(f"{logs}.out", "w") for logs in self.logs]
        self.launchers = [
            subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", *common, "--log_dir", str(logs),
                              TRAIN, "-c", str(cfg), *extra],
                             stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env(), start_new_session=True)
            for logs, out in zip(self.logs, self.outs)]
        FIGURES["jobs"] += 1

    def log(self, node, proc=0):
        path = self.logs[node] / f"workerlog.{proc}"
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self, node):
        return open(f"{self.logs[node]}.out", errors="replace").read() + self.log(node)

    def node_of_rank(self, rank):
        """The node whose process has this rank (the launchers agree on ranks at start)."""
        for node in range(len(self.logs)):
            log = self.log(node)
            if f"[rank {rank}]" in log or (rank == 0 and "process(es); global batch" in log
                                           and "[rank " not in log):
                return node
        return None

    def wait_for(self, node, pattern, timeout=600):
        rx, deadline = re.compile(pattern), time.time() + timeout
        while time.time() < deadline:
            if rx.search(self.log(node)):
                return
            if all(p.poll() is not None for p in self.launchers):
                break
            time.sleep(0.1)
        raise AssertionError(f"node {node} never logged {pattern!r}:\n{self.output(node)[-3000:]}")

    def wait(self, timeout=900):
        deadline = time.time() + timeout
        for p in self.launchers:
            p.wait(max(1, deadline - time.time()))
        return [p.returncode for p in self.launchers]

    def kill_everything(self):
        for p in self.launchers:
            for pid in tree(p.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if p.poll() is None:
                p.wait(30)
        for out in self.outs:
            out.close()


def _digests(job):
    found = {}
    for node in range(len(job.logs)):
        for proc in (0, 1):
            found.update({int(r): d for r, d in DIGEST.findall(job.log(node, proc))})
    return found


def _assert_same_weights(a, b):
    differ = differing_tensors(a, b)[0]
    FIGURES["weights lost"] += len(differ)
    assert not differ, f"{len(differ)} tensors differ between {a} and {b}, e.g. {differ[0]}"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, data):
    """An uninterrupted two-node run: (its output folder, its job)."""
    tmp = tmp_path_factory.mktemp("two-nodes")
    job = Job(tmp, _config(tmp, "whole", data), "whole")
    try:
        rcs = job.wait()
    finally:
        job.kill_everything()
    assert rcs == [0, 0], f"rc {rcs}\n{job.output(0)[-3000:]}\n{job.output(1)[-3000:]}"
    return tmp / "whole", job


def test_two_nodes_train_in_step_with_one_two_process_launch(tmp_path, data, two_nodes):
    out, job = two_nodes
    for node in (0, 1):
        assert "2 process(es); global batch 16 x 2 = 32" in job.log(node), job.log(node)[-2000:]
    assert {job.node_of_rank(0), job.node_of_rank(1)} == {0, 1}        # one process on each node
    nodes = _digests(job)
    assert sorted(nodes) == [0, 1] and nodes[0] == nodes[1], nodes

    single = Job(tmp_path, _config(tmp_path, "one-launch", data), "one-launch", nodes=1)
    try:
        assert single.wait() == [0], single.output(0)[-3000:]
    finally:
        single.kill_everything()
    launch = _digests(single)
    assert launch == nodes, f"two nodes {nodes}, one two-process launch {launch}"
    _assert_same_weights(out / "latest", tmp_path / "one-launch" / "latest")


def _lose(job, victim_rank, how):
    """Take the node of `victim_rank` away `how` in the middle of epoch 1; -> (survivor node,
    seconds until every process of both nodes was gone)."""
    victim = job.node_of_rank(victim_rank)
    assert victim is not None, job.output(0)[-2000:] + job.output(1)[-2000:]
    survivor = 1 - victim
    launcher = job.launchers[victim].pid
    node = tree(launcher)
    trainer = [p for p in node if p != launcher and proc_table()[p][0] == launcher]
    assert len(trainer) == 1, f"launcher {launcher}: processes {node}"
    if how == "rank":                         # the training process alone
        os.kill(trainer[0], signal.SIGKILL)
    elif how == "launcher":                   # the node's launch command (its process group)
        os.killpg(launcher, signal.SIGKILL)
    elif how == "node":                       # every process of the node at once
        for pid in node:
            os.kill(pid, signal.SIGKILL)
    elif how == "freeze":                     # the node stops answering (a hang, a cut cable)
        for pid in node:
            os.kill(pid, signal.SIGSTOP)
    FIGURES["kills"] += 1
    killed_at = time.time()
    everything = set(node) | set(tree(job.launchers[survivor].pid))
    deadline = killed_at + JOB_ENDS_WITHIN_S
    while time.time() < deadline:
        everything |= set(tree(job.launchers[survivor].pid))     # eval loader workers come and go
        left = running(everything - (set(node) if how == "freeze" else set()))
        if not left:
            break
        time.sleep(0.2)
    took = time.time() - killed_at
    left = running(everything - (set(node) if how == "freeze" else set()))
    assert not left, (f"{JOB_ENDS_WITHIN_S} s after losing rank {victim_rank} ({how}) these processes still "
                      f"run: {left}\nsurvivor:\n{job.output(survivor)[-3000:]}")
    FIGURES["jobs ended after a loss"] += 1
    FIGURES["slowest end (s)"] = max(FIGURES["slowest end (s)"], round(took, 1))
    return survivor, took


def _assert_clear_end(job, survivor, lost_rank):
    assert job.launchers[survivor].wait(10) != 0, job.output(survivor)[-3000:]
    log = job.log(survivor)
    m = LOST.search(log)
    assert m, f"no clear message from the surviving rank:\n{log[-3000:]}"
    assert int(m.group(1)) == 1 - lost_rank
    assert "Global.checkpoints" in log[m.start():]                     # the way forward
    assert "terminate called" not in log and "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("victim_rank, how", [(1, "rank"), (0, "rank"), (1, "launcher"), (0, "node")])
def test_losing_a_rank_or_a_node_mid_epoch_ends_the_job_with_a_clear_message(tmp_path, data, victim_rank, how):
    job = Job(tmp_path, _config(tmp_path, "run", data), "run")
    try:
        job.wait_for(0, r"epoch \[1/2\] iter \[1/")
        job.wait_for(1, r"epoch \[1/2\] iter \[1/")
        job.wait_for(job.node_of_rank(victim_rank), r"epoch \[1/2\] iter \[3/")
        survivor, took = _lose(job, victim_rank, how)
        _assert_clear_end(job, survivor, victim_rank)
        print(f"\nlost rank {victim_rank} ({how}): the job ended {took:.1f} s later")
    finally:
        job.kill_everything()


@pytest.mark.slow
def test_a_node_that_stops_answering_ends_the_job_within_60_s(tmp_path, data):
    """No socket closes when a node hangs or its cable is cut: gloo's 30 s limit ends the wait."""
    job = Job(tmp_path, _config(tmp_path, "run", data), "run")
    try:
        job.wait_for(0, r"epoch \[1/2\] iter \[1/")
        job.wait_for(1, r"epoch \[1/2\] iter \[1/")
        job.wait_for(job.node_of_rank(1), r"epoch \[1/2\] iter \[3/")
        survivor, took = _lose(job, 1, "freeze")
        _assert_clear_end(job, survivor, 1)
        assert "did not answer" in job.log(survivor)
        print(f"\na frozen node: the job ended {took:.1f} s later")
    finally:
        job.kill_everything()


@pytest.mark.slow
def test_resume_after_losing_a_node_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, data, two_nodes):
    whole, whole_job = two_nodes
    cfg = _config(tmp_path, "cut", data)
    job = Job(tmp_path, cfg, "cut")
    try:
        job.wait_for(0, r"epoch \[1/2\] iter \[1/")
        job.wait_for(1, r"epoch \[1/2\] iter \[1/")
        job.wait_for(job.node_of_rank(0), r"saved .*latest \(epoch 1")
        job.wait_for(job.node_of_rank(1), r"epoch \[2/2\] iter \[3/")     # mid-epoch 2
        survivor, _ = _lose(job, 1, "node")
        _assert_clear_end(job, survivor, 1)
    finally:
        job.kill_everything()
    resumed = Job(tmp_path, cfg, "resumed", overrides=[f"Global.checkpoints={tmp_path / 'cut' / 'latest'}"])
    try:
        rcs = resumed.wait()
    finally:
        resumed.kill_everything()
    assert rcs == [0, 0], resumed.output(0)[-3000:] + resumed.output(1)[-3000:]
    FIGURES["resumes"] += 1
    for node in (0, 1):
        assert re.search(r"resumed from \S+: epoch 1, batch 0", resumed.log(node)), resumed.log(node)[-3000:]
    assert _digests(resumed) == _digests(whole_job), (_digests(resumed), _digests(whole_job))
    _assert_same_weights(tmp_path / "cut" / "latest", whole / "latest")
