"""An export is a transaction (issue 14, item 6): prerequisites are checked before anything is
touched, the export is built in a hidden folder beside the target and swapped in only when
complete and checked, so a failure or a kill leaves the previous export as it was; exporting
random weights needs Export.allow_random_weights; export_meta.json records the sha256 of every
file and tools/infer.py / tools/lite_predict.py refuse a file that changed."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from deploy_helpers import (DEMO, ROOT, export_overrides, lite_or_skip, make_weights, o_args,
                            onnx_or_skip, run_tool, shared_export, write_labels)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    lite_or_skip()
    onnx_or_skip()
    return shared_export(tmp_path_factory)


def snapshot(folder):
    """{relative path: bytes} of every file and folder under `folder`, hidden ones included."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            out[rel] = open(path, "rb").read() if os.path.isfile(path) else "<dir>"
    return out


def beside(folder):
    """The hidden entries an export may leave next to its folder (there must be none)."""
    parent, name = os.path.split(str(folder))
    return sorted(e for e in os.listdir(parent) if e.startswith(f".{name}."))


def previous_export(exported, tmp_path):
    """A copy of a complete export (Lite arm + x86 .nb, ONNX) to export over."""
    d = tmp_path / "inference"
    shutil.copytree(exported["dir"], d)
    return d


def test_lite_without_an_interpreter_leaves_the_previous_export_byte_identical(exported, tmp_path):
    d = previous_export(exported, tmp_path)
    before = snapshot(d)
    assert {"lite/mobilenet_v1_arm.nb", "lite/mobilenet_v1_x86.nb", "inference.onnx"} <= set(before)
    other = make_weights(str(tmp_path / "other.pdparams"), seed=9)     # a re-export would differ
    missing = tmp_path / "no-such-python"
    r = run_tool("export.py", "-c", DEMO, *o_args(export_overrides(str(tmp_path), other, exported["labels"])),
                 "--lite", "arm,x86", env={"PPMOBILENET_LITE_PYTHON": str(missing)})
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert str(missing) in r.stderr and "Paddle Lite" in r.stderr, r.stderr[-3000:]
    assert snapshot(d) == before and beside(d) == []
    # the same through Export.lite_python
    r = run_tool("export.py", "-c", DEMO, *o_args(export_overrides(str(tmp_path), other, exported["labels"])),
                 "-o", f"Export.lite_python={missing}", "Export.lite_targets=[arm]")
    assert r.returncode == 1 and str(missing) in r.stderr, r.stderr[-3000:]
    assert snapshot(d) == before and beside(d) == []


def test_export_without_weights_needs_the_explicit_key(tmp_path):
    labels = write_labels(str(tmp_path / "labels.txt"))
    out = tmp_path / "inference"
    base = ["-c", DEMO, "-o", f"Global.save_inference_dir={out}", f"Infer.class_id_map_file={labels}"]
    r = run_tool("export.py", *base)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Global.pretrained_model" in r.stderr and "Export.allow_random_weights" in r.stderr
    assert not out.exists() and beside(out) == []
    r = run_tool("export.py", *base, "Export.allow_random_weights=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "freshly initialised" in r.stdout + r.stderr
    meta = json.load(open(out / "export_meta.json"))
    assert set(meta["files"]) == {"inference.json", "inference.pdiparams", "lite/inference.pdmodel",
                                  "lite/inference.pdiparams", "lite/inference.pdiparams.info",
                                  "labels.txt"}
    assert beside(out) == []


def test_export_records_the_sha256_of_every_file(exported):
    from ppmobilenet.io import folder_files, sha256_file
    d = exported["dir"]
    meta = json.load(open(os.path.join(d, "export_meta.json")))
    assert meta["format_version"] == 2
    assert sorted(meta["files"]) == [f for f in folder_files(d) if f != "export_meta.json"]
    assert all(meta["files"][f] == sha256_file(os.path.join(d, f)) for f in meta["files"])


def _flip(path, n=64):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("name, backend", [("lite/mobilenet_v1_x86.nb", "lite"),
                                           ("inference.pdiparams", "paddle"),
                                           ("inference.onnx", "onnx")])
def test_a_changed_file_is_refused_by_infer(exported, tmp_path, name, backend):
    d = previous_export(exported, tmp_path)
    args = ["--model-dir", str(d), "--backend", backend, "--input", exported["images"][0]]
    lite = {"PPMOBILENET_LITE_PYTHON": lite_or_skip().python}
    assert run_tool("infer.py", *args, env=lite).returncode == 0      # the export as written
    _flip(d / name)
    r = run_tool("infer.py", *args, env=lite)
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert f"{d / name}: its sha256 differs" in r.stderr, r.stderr[-2000:]


def test_a_changed_nb_is_refused_by_lite_predict(exported, tmp_path):
    lite = lite_or_skip()
    d = previous_export(exported, tmp_path)
    script = os.path.join(ROOT, "tools", "lite_predict.py")
    nb = d / "lite" / "mobilenet_v1_x86.nb"
    board = tmp_path / "board"                 # as copied to a board: the .nb beside the meta, renamed
    board.mkdir()
    shutil.copy(nb, board / "model.nb")
    shutil.copy(d / "export_meta.json", board / "export_meta.json")
    for model in (nb, board / "model.nb"):
        r = subprocess.run([lite.python, script, "--model", str(model), exported["images"][0]],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        _flip(model)
        r = subprocess.run([lite.python, script, "--model", str(model), exported["images"][0]],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
        assert f"{model}: its sha256 matches no file" in r.stderr, r.stderr[-2000:]


def test_a_folder_that_is_not_an_export_is_never_replaced(exported, tmp_path):
    """The swap replaces the whole folder: one holding other files (a run's checkpoints, say)
    is refused, naming them, and left alone."""
    from ppmobilenet.deploy import DeployError
    from ppmobilenet.deploy.export import export_model
    from deploy_helpers import load_cfg
    d = tmp_path / "run"
    d.mkdir()
    (d / "latest.pdparams").write_bytes(b"a checkpoint")
    cfg = load_cfg(*export_overrides(str(tmp_path), exported["weights"], exported["labels"])[1:],
                   f"Global.save_inference_dir={d}")
    with pytest.raises(DeployError, match=r"holds files an export does not write \(latest\.pdparams\)"):
        export_model(cfg, log=lambda m: None)
    assert snapshot(d) == {"latest.pdparams": b"a checkpoint"} and beside(d) == []


def test_a_kill_between_the_two_renames_leaves_a_complete_export(exported, tmp_path):
    """The swap's only window: the old folder renamed aside, the new one not yet in place. Both
    are whole; the export reader names where it is, and the next export puts the new one in place."""
    d = previous_export(exported, tmp_path)
    other = make_weights(str(tmp_path / "other.pdparams"), seed=9)
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        from deploy_helpers import load_cfg, export_overrides
        from ppmobilenet.deploy.export import export_model
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if os.path.basename(dst).startswith(".inference.old-"):
                os._exit(9)                   # dies right after the first folder rename
        os.replace = replace                  # what ppmobilenet.io.replace_atomic calls
        export_model(load_cfg(*export_overrides({str(tmp_path)!r}, {other!r}, {exported['labels']!r})[1:]),
                     log=lambda m: None)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 9, r.stderr[-3000:]
    assert not d.exists()
    left = beside(d)
    assert len(left) == 2 and {e.split(".")[2].split("-")[0] for e in left} == {"new", "old"}, left
    from ppmobilenet.deploy import DeployError, read_meta
    from ppmobilenet.io import recover_folder
    new = [e for e in left if ".new-" in e][0]
    with pytest.raises(DeployError, match=f"left the complete one at {tmp_path / new}"):
        read_meta(str(d))                      # what a predictor reads first
    assert recover_folder(d) == str(tmp_path / new)
    read_meta(str(d))                          # complete: every recorded sha256 matches
    assert beside(d) == [] and open(d / "lite" / "inference.pdiparams", "rb").read() != \
        open(os.path.join(exported["dir"], "lite", "inference.pdiparams"), "rb").read()
