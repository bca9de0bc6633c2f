"""Safe weights: safetensors with the architecture in its metadata, tools/convert_weights.py
(checkpoint or fluid-era folder -> .safetensors, never running a pickle's code),
Global.pretrained_model=*.safetensors, and foreign pickles read as safely as safetensors (no
warning needed: nothing in them can run)."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import paddle
import pytest

from engine_helpers import ROOT, TRAIN, run_tool, tiny_config
from ppmobilenet.engine.checkpoint import save_checkpoint
from ppmobilenet.errors import PPMobileNetError
from ppmobilenet.models import build_model_from_arch
from ppmobilenet.weights import (SafeWeightsError, WeightsError, arch_from_metadata, load_fluid_params,
                                 load_pickle_weights, load_pretrained, read_metadata, read_safe_weights,
                                 save_safe_weights)

CONVERT = os.path.join(ROOT, "tools", "convert_weights.py")
ARCH = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}


def model(**arch):
    paddle.seed(len(arch))
    return build_model_from_arch(dict(ARCH, **arch))


def same(state_a, state_b):
    a = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in state_a.items()}
    b = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in state_b.items()}
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def convert(*args, cwd=ROOT):
    return subprocess.run([sys.executable, CONVERT, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.fixture
def saved(tmp_path):
    m = model()
    path = save_safe_weights(tmp_path / "w.safetensors", m, ARCH)
    return m, path


# ------------------------------------------------------------------ the format

def test_round_trip_keeps_every_tensor_and_the_architecture(saved):
    m, path = saved
    state, meta = read_safe_weights(path)
    same(state, m.state_dict())
    assert arch_from_metadata(meta) == ARCH
    assert read_metadata(path)["model"] == "mobilenet_v1" and meta["class_num"] == "10"
    with open(path, "rb") as f:          # a JSON header, then raw bytes: no pickle opcodes
        n = int.from_bytes(f.read(8), "little")
        assert json.loads(f.read(n))["__metadata__"]["head"] == "classic"


def _rewrite(path, drop=None, meta_update=None):
    """Rewrite a safetensors file with the same metadata (so the same CRC list) but changes."""
    import safetensors.numpy
    state, meta = read_safe_weights(path)
    if drop:
        state.pop(drop)
    meta.update(meta_update or {})
    with open(path, "wb") as f:
        f.write(safetensors.numpy.save(state, metadata=meta))


def test_missing_tensor_is_named(saved):
    _, path = saved
    _rewrite(path, drop="fc.bias")
    with pytest.raises(SafeWeightsError, match=r"w\.safetensors: missing tensor\(s\) fc\.bias"):
        read_safe_weights(path)


def test_missing_tensor_in_a_foreign_file_is_named_at_load(tmp_path):
    """A safetensors file without our CRC list (written by another tool) lacking a tensor."""
    import safetensors.numpy
    m = model()
    state = {k: v.numpy() for k, v in m.state_dict().items() if k != "fc.weight"}
    path = tmp_path / "foreign.safetensors"
    path.write_bytes(safetensors.numpy.save(state))
    with pytest.raises(WeightsError, match=r"foreign\.safetensors[\s\S]*missing: fc\.weight"):
        load_pretrained(model(), str(path))


def test_flipped_byte_names_the_tensor_and_file(saved):
    _, path = saved
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x01                    # inside the last tensor's bytes: safetensors can't tell
    open(path, "wb").write(bytes(data))
    with pytest.raises(SafeWeightsError, match=r"w\.safetensors: damaged: CRC32 mismatch in tensor"):
        read_safe_weights(path)


@pytest.mark.parametrize("cut", [4, 100, -1])
def test_truncated_file_is_named(saved, cut):
    _, path = saved
    data = open(path, "rb").read()
    open(path, "wb").write(data[:cut])
    with pytest.raises(SafeWeightsError, match=r"w\.safetensors") as info:
        read_safe_weights(path)
    assert isinstance(info.value, PPMobileNetError)


def test_newer_format_version_is_refused(saved):
    _, path = saved
    _rewrite(path, meta_update={"format_version": "7"})
    with pytest.raises(SafeWeightsError, match="format version '7' is newer"):
        read_safe_weights(path)


# ------------------------------------------------------------------ pickles without their code

class _Payload:
    """A pickle that creates a folder when it is opened: the harm a shared .pdparams can do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(tmp_path, name="evil.pdparams"):
    marker = str(tmp_path / "code-ran")
    state = {k: v.numpy() for k, v in model().state_dict().items()}
    state["fc.bias"] = _Payload(marker)
    path = tmp_path / name
    path.write_bytes(pickle.dumps(state, protocol=4))
    return path, marker


def test_paddle_load_runs_code_but_conversion_does_not(tmp_path):
    path, marker = _evil(tmp_path)
    # why: paddle.load on a shared .pdparams executes what the file says
    paddle.load(str(path))
    assert os.path.isdir(marker)
    os.rmdir(marker)
    r = convert(path, "-c", os.path.join(ROOT, "configs", "demo.yaml"))
    assert r.returncode == 1, r.stderr
    assert "refused to open" in r.stderr and "posix.mkdir" in r.stderr and str(path) in r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(marker) and not (tmp_path / "evil.safetensors").exists()


def test_restricted_reader_reads_real_paddle_files(tmp_path):
    m = model()
    paddle.save(m.state_dict(), str(tmp_path / "m.pdparams"))
    state = load_pickle_weights(tmp_path / "m.pdparams")
    state.pop("StructuredToParameterName@@", None)
    same(state, m.state_dict())


# ------------------------------------------------------------------ tools/convert_weights.py

def test_convert_a_checkpoint_with_arch_from_its_states(tmp_path):
    m = model()
    opt = paddle.optimizer.Momentum(parameters=m.parameters())
    save_checkpoint(tmp_path / "run" / "best_model", m, opt, {"epoch": 3, "arch": dict(ARCH)})
    r = convert(tmp_path / "run" / "best_model")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run" / "best_model.safetensors"
    assert f"wrote {out}" in r.stdout and "mobilenet_v1 x0.25, head classic, 10 classes" in r.stdout
    state, meta = read_safe_weights(out)
    same(state, m.state_dict())
    assert arch_from_metadata(meta) == ARCH and meta["source"] == "best_model.pdparams"


def test_convert_refuses_weights_that_do_not_fit_the_config(tmp_path):
    m = model()
    paddle.save(m.state_dict(), str(tmp_path / "w.pdparams"))
    r = convert(tmp_path / "w.pdparams", "-c", os.path.join(ROOT, "configs", "demo.yaml"),
                "-o", "Arch.scale=0.5")
    assert r.returncode == 1 and "mis-shaped: conv1.conv.weight [8, 3, 3, 3] (model: [16, 3, 3, 3])" \
        in r.stderr, r.stderr
    assert not (tmp_path / "w.safetensors").exists()
    r = convert(tmp_path / "w.pdparams")            # no config, no .pdstates: says what to do
    assert r.returncode == 1 and "pass -c CONFIG" in r.stderr


def test_convert_a_fluid_era_folder(tmp_path):
    """The seed's own graph saved by paddle.static.save_vars (fluid's writer) -> safetensors ->
    the same tensors as loading the folder directly."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps([{"graph": "seed", "scale": 0.25, "class_dim": 10}]))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fluid_reference.py"),
                           str(spec), str(tmp_path / "ref")], capture_output=True, text=True,
                          env=dict(os.environ, FLAGS_enable_pir_api="0"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "ref" / "0" / "weights"
    r = convert(folder, "-c", os.path.join(ROOT, "configs", "demo.yaml"), "-o", "Arch.head=demo",
                "--out", tmp_path / "seed.safetensors")
    assert r.returncode == 0, r.stderr
    want = model(head="demo")
    load_fluid_params(want, str(folder))
    state, meta = read_safe_weights(tmp_path / "seed.safetensors")
    same(state, want.state_dict())
    assert meta["head"] == "demo" and meta["source"] == "weights"


# ------------------------------------------------------------------ Global.pretrained_model

def test_load_pretrained_accepts_safetensors(saved):
    m, path = saved
    paddle.seed(123)                    # other fresh weights than the saved ones
    fresh = build_model_from_arch(ARCH)
    rep = load_pretrained(fresh, path)
    assert rep["format"] == "safetensors" and rep["loaded"] == len(m.state_dict())
    same(fresh.state_dict(), m.state_dict())
    # another class count: the classifier stays fresh, the rest loads (fine-tuning)
    other = build_model_from_arch(dict(ARCH, class_num=4))
    rep = load_pretrained(other, path)
    assert rep["skipped"] == ["fc.bias", "fc.weight"]


DATA_SUBSET = dict(n_train=64, n_val=32)  # the conftest's `data` fixture: a smaller cut


def test_training_from_safetensors_and_a_foreign_pickle_alike(tmp_path, data):
    """tools/train.py: a foreign .pdparams (read by the restricted reader, so no warning) and
    its .safetensors twin give the same first-epoch weights."""
    shared = tmp_path / "shared"
    m = model()
    shared.mkdir()
    paddle.save(m.state_dict(), str(shared / "w.pdparams"))
    assert convert(shared / "w.pdparams", "-c", os.path.join(ROOT, "configs", "demo.yaml")).returncode == 0

    runs = {}
    for name, weights in (("pickle", shared / "w.pdparams"), ("safe", shared / "w.safetensors")):
        cfg = tiny_config(tmp_path / f"{name}.yaml", tmp_path / name, data, epochs=1, workers=0,
                          Global={"eval_during_train": False, "use_visualdl": False,
                                  "pretrained_model": str(weights)})
        r = run_tool(TRAIN, cfg)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = r.stdout + r.stderr
    assert "is a pickle from outside" not in runs["pickle"] + runs["safe"]
    assert "[pdparams]" in runs["pickle"] and "[safetensors]" in runs["safe"]
    same(paddle.load(str(tmp_path / "pickle" / "latest.pdparams")),
         paddle.load(str(tmp_path / "safe" / "latest.pdparams")))
    cfg = tmp_path / "safe.yaml"
    r = run_tool(TRAIN, cfg, f"Global.checkpoints={tmp_path / 'safe' / 'latest'}", "Global.epochs=2")
    assert r.returncode == 0 and "resumed from" in r.stdout + r.stderr, r.stderr[-3000:]


@pytest.mark.slow
def test_export_takes_a_foreign_pickle_and_safetensors_alike(tmp_path):
    """tools/export.py: the same weights as a foreign .pdparams and as .safetensors export to
    the same inference parameters, neither with a warning."""
    shared = tmp_path / "shared"
    shared.mkdir()
    paddle.save(model().state_dict(), str(shared / "w.pdparams"))
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    assert convert(shared / "w.pdparams", "-c", demo).returncode == 0
    outs = {}
    for name in ("w.pdparams", "w.safetensors"):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), "-c", demo,
                            "-o", f"Global.pretrained_model={shared / name}",
                            f"Global.output_dir={tmp_path / 'run'}",
                            f"Global.save_inference_dir={tmp_path / name}"],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = r.stdout + r.stderr
    assert "is a pickle from outside" not in outs["w.pdparams"] + outs["w.safetensors"]
    assert (tmp_path / "w.pdparams" / "inference.pdiparams").read_bytes() == \
        (tmp_path / "w.safetensors" / "inference.pdiparams").read_bytes()


def test_metadata_records_the_variant_and_names_what_to_set(tmp_path):
    """A V2/V3 file records its lineage; loaded into another lineage, width or network it says
    which -o to set (its tensors are in our names, so only the metadata can tell). A file written
    before variants were recorded still loads into the network it fits."""
    arch = {"name": "mobilenet_v2", "class_num": 10, "scale": 0.5, "variant": "torchvision"}
    path = save_safe_weights(tmp_path / "v2.safetensors", build_model_from_arch(arch), arch)
    meta = read_metadata(path)
    assert meta["variant"] == "torchvision" and meta["head"] == "" and arch_from_metadata(meta) == arch
    for other, fix in ((dict(arch, variant="paddle"), "-o Arch.variant=torchvision"),
                       (dict(arch, scale=1.0), "-o Arch.scale=0.5"),
                       (dict(arch, name="mobilenet_v3_small"), "-o Arch.name=mobilenet_v2")):
        with pytest.raises(SafeWeightsError) as e:
            load_pretrained(build_model_from_arch(other), str(path))
        assert str(e.value).endswith(f"set {fix}") and str(path) in str(e.value), str(e.value)
    assert load_pretrained(build_model_from_arch(dict(arch, class_num=3)), str(path))["skipped"] == \
        ["fc.bias", "fc.weight"]                          # fine-tuning: only the class count differs
    _rewrite(path, meta_update={"variant": ""})           # as files written before variants
    assert load_pretrained(build_model_from_arch(arch), str(path))["loaded"] == len(build_model_from_arch(arch).state_dict())
