"""Bad input, fuzzed (hypothesis): the config loader, the image loader, the fluid tensor reader,
the list / label file parsers and the safetensors / pickle weight readers.

Every case must end in success or a PPMobileNetError (the base of ConfigError, DataError,
FluidParamsError, CheckpointError) with a non-empty message: never another exception, a hang
(each call runs under a SIGALRM watchdog) or a crash (it would take pytest down with it).
The default budget is small; the `slow` variants run many more cases (CI runs both).
"""
import contextlib
import io
import os
import shutil
import signal
import string
import tempfile

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ppmobilenet.config import SCHEMA, load_config, schema_keys
from ppmobilenet.data import load_image, parse_label_file, parse_list_file
from ppmobilenet.errors import PPMobileNetError
from ppmobilenet.models import read_fluid_tensor

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=3000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_SECONDS = 20

# cases tried per target, printed at the end of the session (the figures of the closing note)
TRIED = {}


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds=HANG_SECONDS):
    def fire(signum, frame):
        raise Hang(f"no answer within {seconds}s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def outcome(target, fn, *args):
    """Call fn; success or PPMobileNetError with a message pass, anything else fails the test."""
    TRIED[target] = TRIED.get(target, 0) + 1
    try:
        with watchdog():
            return fn(*args)
    except PPMobileNetError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return e


@pytest.fixture(scope="module")
def scratch():
    d = tempfile.mkdtemp(prefix="ppm-fuzz-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _write(folder, name, data):
    path = os.path.join(folder, name)
    with open(path, "wb" if isinstance(data, bytes) else "w",
              **({} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""})) as f:
        f.write(data)
    return path


def teardown_module(module):
    print("\nfuzz cases tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())))


# ------------------------------------------------------------------ config: YAML and -o

LEAVES = schema_keys()
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in LEAVES} | set(SCHEMA))
VALID = {"Global": {"epochs": 2}, "Arch": {"name": "mobilenet_v1", "class_num": 10}}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["mobilenet_v1", "classic", "Cosine", "Piecewise", "ToTensor",
                                     "Resize", "DemoDigits", "ImageFolder", "O2", "1e-5", "-1",
                                     "[1, 5]", "{size: 8}", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["size", "mean", "std", "ToTensor", "Normalize", "RandomResizedCrop", "scale",
         "interpolation", "keys"])), inner, max_size=4)), max_leaves=12)
names = st.one_of(st.sampled_from(LEAVES + SECTIONS), st.text(max_size=10))


def _set(doc, dotted, value):
    node = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


@st.composite
def documents(draw):
    """A valid minimal config with random keys replaced, added or broken; or any YAML value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    doc = {"Global": dict(VALID["Global"]), "Arch": dict(VALID["Arch"])}
    for _ in range(draw(st.integers(0, 4))):
        _set(doc, draw(names), draw(values))
    return doc


override_text = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(LEAVES + SECTIONS), st.one_of(
        st.text(max_size=20), st.sampled_from(["null", "None", "[1,", "{a: 1}", "1e-5", "inf",
                                               "nan", "()", "[[]]", "'x'", "*a", "&a 1", "!!python/object:os.system ls"]),
        values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))),
    st.builds(lambda k, i, v: f"{k}.{i}={v}", st.sampled_from(
        ["DataLoader.Train.transforms", "DataLoader.Eval.transforms", "Metric.topk",
         "Global.image_shape", "Optimizer.lr.values"]),
        st.one_of(st.integers(-3, 5), st.text(max_size=3)), st.text(max_size=8)),
    st.text(max_size=30))


@FAST
@given(doc=documents(), overrides=st.lists(override_text, max_size=3))
def test_fuzz_config_documents_and_overrides(scratch, doc, overrides):
    path = _write(scratch, "c.yaml", yaml.safe_dump(doc, allow_unicode=True))
    outcome("config", load_config, path, overrides)


@FAST
@given(text=st.one_of(st.text(max_size=300), st.text(alphabet=":-[]{}&*!|>'\"#%@` \n\tab1.,?",
                                                     max_size=200)))
def test_fuzz_config_raw_yaml_text(scratch, text):
    path = _write(scratch, "t.yaml", text)
    outcome("config-text", load_config, path, ())


@pytest.mark.parametrize("text", [
    # a billion laughs: aliases make a small file an exponential tree
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    + "Global: {epochs: 2, output_dir: *i}\nArch: {name: mobilenet_v1, class_num: 10}\n",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    + "Global: {epochs: 2}\nArch: {name: mobilenet_v1, class_num: 10}\n"
    + "DataLoader: {Train: {transforms: [{Resize: {size: *i}}, {Normalize: *i}, *i]}}\n",
    "Global: " + "[" * 5000 + "]" * 5000 + "\n",      # deeper than Python's recursion limit
    "Global: {epochs: 2}\nArch: {name: mobilenet_v1, class_num: " + "9" * 5000 + "}\n",
    "\ufeffGlobal: {epochs: 2}\x00\n",
    "Global: !!python/object/apply:os.system [echo pwned]\n",
])
def test_hostile_yaml_documents(scratch, text):
    path = _write(scratch, "h.yaml", text)
    outcome("config-hostile", load_config, path, ())


def test_hostile_override_values(scratch):
    path = _write(scratch, "ok.yaml", yaml.safe_dump(VALID))
    for opt in ["Global.epochs=" + "[" * 5000, "Global.epochs=" + "(" * 500 + ")" * 500,
                "Global.output_dir=" + "9" * 10000, "Arch.class_num=" + "1" * 5000,
                "Global.seed=" + "9" * 5000, "Global.epochs=" + "-" * 1000 + "1",
                "²=1", "Global.image_shape.²=1", "DataLoader.Train.transforms.٣=1"]:
        outcome("config-hostile", load_config, path, [opt])


# ------------------------------------------------------------------ image loader

def _seed_images():
    """Small valid files of every common format, for mutation."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (7, 5, 3), dtype=np.uint8)
    out = []
    for fmt, mode in [("PNG", "RGB"), ("PNG", "P"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"),
                      ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"), ("PPM", "RGB"),
                      ("PNG", "I;16"), ("TIFF", "F")]:
        img = Image.fromarray(arr).convert(mode) if mode not in ("I;16", "F") else \
            Image.fromarray(arr[..., 0].astype(np.float32 if mode == "F" else np.uint16) * 3)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEED_IMAGES = _seed_images()


@st.composite
def mutated(draw, seeds):
    """A seed file with random bytes flipped, inserted, cut or replaced; or pure random bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            data = data[:pos]
    return bytes(data)


@FAST
@given(data=mutated(SEED_IMAGES))
def test_fuzz_image_loader(scratch, data):
    img = outcome("image", load_image, _write(scratch, "img.bin", data))
    if isinstance(img, Image.Image):
        assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


# ------------------------------------------------------------------ fluid tensor reader

def _fluid_tensor(arr, dtype_code):
    """The fluid LoDTensor file format, written by hand (see models/fluid_params.py)."""
    dims = b"".join(b"\x10" + _varint(d) for d in arr.shape)
    desc = b"\x08" + _varint(dtype_code) + dims
    return (b"\0\0\0\0" + (0).to_bytes(8, "little") + b"\0\0\0\0"
            + len(desc).to_bytes(4, "little") + desc + arr.tobytes())


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


SEED_TENSORS = [_fluid_tensor(np.arange(12, dtype=np.float32).reshape(3, 4), 5),
                _fluid_tensor(np.arange(4, dtype=np.int64), 3),
                _fluid_tensor(np.zeros((2, 1, 3, 3), np.float16), 4)]


@FAST
@given(data=mutated(SEED_TENSORS))
def test_fuzz_fluid_tensor_reader(scratch, data):
    arr = outcome("fluid-tensor", read_fluid_tensor, _write(scratch, "conv2d_0.w_0", data))
    if isinstance(arr, np.ndarray):
        assert arr.size * arr.itemsize <= len(data)


@pytest.mark.parametrize("dims", [[2 ** 62, 4], [2 ** 32, 2 ** 32], [0, 2 ** 63 - 1], [2 ** 63 - 1]])
def test_fluid_tensor_with_overflowing_shape(scratch, dims):
    desc = b"\x08\x05" + b"".join(b"\x10" + _varint(d) for d in dims)
    data = b"\0" * 16 + len(desc).to_bytes(4, "little") + desc
    outcome("fluid-tensor", read_fluid_tensor, _write(scratch, "big.w_0", data))


# ------------------------------------------------------------------ list and label files

line_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda p, sep, lab: f"{p}{sep}{lab}",
              st.text(alphabet=string.ascii_letters + "/._- é中", max_size=20),
              st.sampled_from([" ", "\t", "  ", "\u3000", "\x0b", ",", ""]),
              st.one_of(st.integers(-5, 2 ** 70).map(str),
                        st.sampled_from(["1_0", "١", "3.0", "0x1", "+1", "9" * 5000, "", "#"]))),
)


@FAST
@given(lines=st.lists(line_text, max_size=8), class_num=st.one_of(st.none(), st.integers(1, 20)),
       newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_fuzz_list_and_label_files(scratch, lines, class_num, newline):
    path = _write(scratch, "list.txt", newline.join(lines))
    got = outcome("list-file", parse_list_file, path, class_num)
    if isinstance(got, list):
        assert got and all(isinstance(lab, int) and 0 <= lab for _, lab, _ in got)
    outcome("label-file", parse_label_file, path, class_num)


@pytest.mark.parametrize("text", [" 172944503", "0 a\n999999999999 b", "-1 x", "0 a\n0 b"])
def test_label_file_with_huge_or_bad_ids(scratch, text):
    """Found by the slow fuzz budget: one id of 172944503 made the gap check build a set of
    172 million ints (a hang, then out of memory)."""
    assert isinstance(outcome("label-file", parse_label_file, _write(scratch, "ids.txt", text)),
                      PPMobileNetError)


@FAST
@given(data=st.binary(max_size=200))
def test_fuzz_list_file_bytes(scratch, data):
    outcome("list-file", parse_list_file, _write(scratch, "blist.txt", data), None)


# ------------------------------------------------------------------ weight files

def _seed_weights():
    from ppmobilenet.engine.safe_weights import save_safe_weights
    folder = tempfile.mkdtemp(prefix="ppm-fuzz-seed-")
    try:
        p = save_safe_weights(os.path.join(folder, "w.safetensors"),
                              {"a.weight": np.ones((2, 3), np.float32), "b": np.arange(3)},
                              {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25})
        with open(p, "rb") as f:
            safe = f.read()
        import pickle
        pick = pickle.dumps({"a.weight": np.ones((2, 3), np.float32)}, protocol=2)
        return [safe, pick, pickle.dumps({"x": np.arange(4)}, protocol=4)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SEED_WEIGHTS = _seed_weights()


def _check_weight_readers(path):
    from ppmobilenet.engine.safe_weights import load_pickle_weights, read_safe_weights
    outcome("safetensors", read_safe_weights, path)
    outcome("pickle-weights", load_pickle_weights, path)


@FAST
@given(data=mutated(SEED_WEIGHTS))
def test_fuzz_weight_readers(scratch, data):
    _check_weight_readers(_write(scratch, "w.safetensors", data))


@pytest.mark.parametrize("data", [
    # found by the slow budget: LONG_BINPUT 999335818 made the C unpickler's memo array
    # gigabytes long (a hang, then out of memory) after 70 bytes
    b"\x80\x02}q\x00X<\x00\x00\x00a.weightq\x01cnumpy._core.multiarray\n_reconstruct\nq\x02cnumpy"
    b"\nndarr\x8a\xa7\x90;ay\nq\x03K\x00\x85",
    # numpy's _reconstruct allocating a shape far larger than the file
    b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x05\x00\x00\x00\x00\x01"
    b"\x85C\x01b\x87R.",
])
def test_hostile_pickles(scratch, data):
    from ppmobilenet.engine.safe_weights import load_pickle_weights
    got = outcome("pickle-weights", load_pickle_weights, _write(scratch, "bomb.pdparams", data))
    assert isinstance(got, PPMobileNetError)


# ------------------------------------------------------------------ bigger budgets (slow)

@pytest.mark.slow
@SLOW
@given(doc=documents(), overrides=st.lists(override_text, max_size=4))
def test_fuzz_config_slow(scratch, doc, overrides):
    path = _write(scratch, "cs.yaml", yaml.safe_dump(doc, allow_unicode=True))
    outcome("config", load_config, path, overrides)


@pytest.mark.slow
@SLOW
@given(data=mutated(SEED_IMAGES))
def test_fuzz_image_loader_slow(scratch, data):
    outcome("image", load_image, _write(scratch, "imgs.bin", data))


@pytest.mark.slow
@SLOW
@given(data=mutated(SEED_TENSORS))
def test_fuzz_fluid_tensor_reader_slow(scratch, data):
    outcome("fluid-tensor", read_fluid_tensor, _write(scratch, "conv2d_1.w_0", data))


@pytest.mark.slow
@SLOW
@given(lines=st.lists(line_text, max_size=12), class_num=st.one_of(st.none(), st.integers(1, 20)))
def test_fuzz_list_and_label_files_slow(scratch, lines, class_num):
    path = _write(scratch, "lists.txt", "\n".join(lines))
    outcome("list-file", parse_list_file, path, class_num)
    outcome("label-file", parse_label_file, path, class_num)


@pytest.mark.slow
@SLOW
@given(data=mutated(SEED_WEIGHTS))
def test_fuzz_weight_readers_slow(scratch, data):
    _check_weight_readers(_write(scratch, "ws.safetensors", data))
