"""Two processes on CPU through the real `python -m paddle.distributed.launch` (gloo)."""
import glob
import re
import subprocess
import sys

import pytest

from engine_helpers import ROOT, TRAIN, demo_subset, env, tiny_config
from ppmobilenet.engine.checkpoint import read_states


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "engine-cache"
    return demo_subset(tmp_path_factory.mktemp("dist-data"), str(cache))


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
