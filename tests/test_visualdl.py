"""A real VisualDL server, started here on 127.0.0.1, shows what tools/train.py logged, and a
resumed run continues the same curves (same run, steps carry on, nothing jumps back)."""
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from engine_helpers import TRAIN, env, error_line, ok, run_tool, tiny_config
from ppmobilenet.engine.trainer import SCALAR_TAGS

VISUALDL = os.path.join(os.path.dirname(sys.executable), "visualdl")
TAGS = SCALAR_TAGS  # train/loss, train/top1, train/top5, train/lr, train/ips, eval/loss, eval/top1, eval/top5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, logdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [VISUALDL, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
             "--language", "en", "--disable-telemetry"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env())
        deadline = time.time() + 90
        while True:
            try:
                self.get("/app/api/runs")
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError("visualdl did not come up: "
                                       + self.proc.stdout.read().decode(errors="replace")[-2000:])
                time.sleep(0.5)

    def get(self, path, **query):
        url = f"http://127.0.0.1:{self.port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read().decode())
        assert body["status"] == 0, body
        return body["data"]

    def scalars(self, run, tag):
        return [(step, value) for _, step, value in self.get("/app/api/scalar/list", run=run, tag=tag)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def logged_losses(stdout):
    """The loss printed on each console line (print_batch_step 1: one line a step)."""
    return [float(line.split(" loss ")[1].split()[0]) for line in stdout.splitlines()
            if " iter [" in line and " loss " in line]


@pytest.mark.slow
def test_server_shows_training_and_resume_continues(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1)
    first = run_tool(TRAIN, cfg)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"visualdl --logdir {out / 'vdl'} --host 127.0.0.1 --port 8040" in first.stdout

    server = Server(out)
    try:
        runs = server.get("/app/api/runs")
        assert len(runs) == 1 and runs[0].endswith("vdl"), runs  # one run: <output_dir>/vdl
        run = runs[0]
        tags = server.get("/app/api/tags")
        for tag in TAGS:
            assert tags.get(f"{run}/{tag.replace('/', '%')}") == "scalar", (tag, tags)
        assert tags.get(f"{run}/train%inputs") == "image"
        assert server.get("/app/api/image/list", run=run, tag="train/inputs")
        names = [h["name"] for h in server.get("/app/api/hparams/indicators")["hparams"]]
        assert {"arch", "scale", "lr", "global_batch"} <= set(names)

        loss = server.scalars(run, "train/loss")
        assert [s for s, _ in loss] == list(range(1, 7))  # 192 images / 32 = 6 steps
        # the served values are the ones printed on the console
        assert [round(v, 5) for _, v in loss] == pytest.approx(logged_losses(first.stdout), abs=1e-5)
        assert [s for s, _ in server.scalars(run, "eval/top1")] == [6]

        second = run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'latest'}", "Global.epochs=2")
        assert second.returncode == 0, second.stdout + second.stderr
        assert server.get("/app/api/runs") == [run]  # the same run, not a new one
        deadline = time.time() + 30  # the server re-reads the file on its own schedule
        while True:
            loss = server.scalars(run, "train/loss")
            if len(loss) == 12 or time.time() > deadline:
                break
            time.sleep(1)
        assert [s for s, _ in loss] == list(range(1, 13))
        assert [round(v, 5) for _, v in loss[6:]] == pytest.approx(logged_losses(second.stdout), abs=1e-5)
        assert [s for s, _ in server.scalars(run, "eval/top1")] == [6, 12]
        assert [s for s, _ in server.scalars(run, "train/lr")] == list(range(1, 13))
    finally:
        server.stop()


def test_visualdl_can_be_switched_off(tmp_path, data):
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1, Global={"use_visualdl": False})
    r = run_tool(TRAIN, cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (out / "vdl").exists() and (out / "latest.pdparams").exists()


def test_a_run_that_fails_at_start_leaves_the_shown_curves_alone(tmp_path, data):
    """VisualDL shows the newest record file of a folder: a run that fails before its first step
    must not leave one (an empty file would hide the curves of the run before it)."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1)
    ok(run_tool(TRAIN, cfg))
    best = (out / "best_model.pdparams").read_bytes()
    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    (bad_root / "broken.png").write_bytes(b"not a png")
    (tmp_path / "bad.txt").write_text("broken.png 0\n" * 64)
    # a new run replacing that one (Global.overwrite_output) whose every image is unreadable
    r = run_tool(TRAIN, cfg, "Global.overwrite_output=true", f"DataLoader.Train.dataset.image_root={bad_root}",
                 f"DataLoader.Train.dataset.cls_label_path={tmp_path / 'bad.txt'}")
    assert r.returncode == 1 and "broken.png" in error_line(r), r.stderr[-2000:]
    assert len(glob.glob(str(out / "vdl" / "vdlrecords*"))) == 1
    assert (out / "best_model.pdparams").read_bytes() == best  # it saved nothing, so it removed nothing

    server = Server(out)
    try:
        run = server.get("/app/api/runs")[0]
        assert [s for s, _ in server.scalars(run, "train/loss")] == list(range(1, 7))
        assert [s for s, _ in server.scalars(run, "eval/top1")] == [6]
    finally:
        server.stop()
