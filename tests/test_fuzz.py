"""Bad input, fuzzed (hypothesis): the config loader, the image loader, the fluid tensor reader,
the list / label file parsers and the safetensors / pickle weight readers.

Every case must end in success or a PPMobileNetError (the base of ConfigError, DataError,
FluidParamsError, CheckpointError) with a non-empty message: never another exception, a hang or
a crash. The calls run in a child process (tests/fuzz_worker.py): a hang, even inside C code, is
ended after HANG_SECONDS with every thread's stack (faulthandler) and fails the test, and so does
a crash, without taking pytest down. The default budget is small; the `slow` variants run many
more cases (CI runs both).
"""
import io
import os
import pickle
import select
import shutil
import signal
import string
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fuzz_worker import HANG_SECONDS
from ppmobilenet.config import SCHEMA, schema_keys
from ppmobilenet.weights import save_safe_weights

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=3000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_worker.py")

# cases tried per target, printed at the end of the session (the figures of the closing note)
TRIED = {}


class Refused:
    """A PPMobileNetError the target raised: the refusal every bad input must end in."""

    def __init__(self, kind, message):
        self.kind, self.message = kind, message

    def __repr__(self):
        return f"Refused({self.kind}: {self.message[:200]!r})"


def _current_test():
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]


class Worker:
    """The child interpreter of tests/fuzz_worker.py, restarted after a hang or a crash. After a
    hang, the other inputs of the same test fail at once with that first report: hypothesis
    then shrinks in seconds, not 20 s a try, and the report names the input that hung."""

    def __init__(self, folder):
        self.folder, self.proc, self.broken = folder, None, {}

    def start(self):
        self.err = open(os.path.join(self.folder, f"worker-{time.time_ns()}.err"), "w+")
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     env=dict(os.environ, PYTHONFAULTHANDLER="1"))
        ready = self._reply(time.time() + 300)
        assert ready == ("ready",), self._died(f"fuzz worker did not start: {ready!r}")

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.err.close()
            self.proc = None

    def _stderr(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()[-8000:]

    def _died(self, what):
        if self.proc.poll() is None:     # hung: its stacks are written, end it
            self.proc.kill()
        self.proc.wait()
        text = f"{what}; the worker ended with status {self.proc.returncode}:\n{self._stderr()}"
        self.stop()
        return text

    def _read(self, n, deadline):
        out = b""
        fd = self.proc.stdout.fileno()
        while len(out) < n:
            left = deadline - time.time()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def _reply(self, deadline):
        head = self._read(8, deadline)
        if head is None:
            return None
        body = self._read(struct.unpack("<Q", head)[0], deadline + 60)
        return None if body is None else pickle.loads(body)

    def call(self, target, args):
        first = self.broken.get(_current_test())
        if first:
            pytest.fail(f"an earlier input of this test failed the worker:\n{first}")
        if self.proc is None:
            self.start()
        data = pickle.dumps((target, args))
        what = f"{target}{tuple(args)!r}"[:2000]
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            reply = self._reply(time.time() + HANG_SECONDS)
        except (EOFError, BrokenPipeError):
            self._fail(self._died(f"{what} crashed the process"))
        if reply is None:
            self.proc.send_signal(signal.SIGUSR1)       # faulthandler: every thread's stack
            time.sleep(2)
            self._fail(self._died(f"{what}: no answer within {HANG_SECONDS} s (a hang); its threads"))
        return reply

    def _fail(self, report):
        self.broken[_current_test()] = report
        pytest.fail(report)


@pytest.fixture(scope="module")
def scratch():
    d = tempfile.mkdtemp(prefix="ppm-fuzz-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def worker(scratch):
    w = Worker(scratch)
    yield w
    w.stop()


def outcome(worker, target, *args):
    """Run target(*args) in the worker: a success (its summary) or a Refused pass, anything
    else (another exception, a hang, a crash) fails the test."""
    TRIED[target] = TRIED.get(target, 0) + 1
    reply = worker.call(target, args)
    if reply[0] == "raised":
        pytest.fail(f"{target}{args!r:.2000}: raised instead of a PPMobileNetError:\n{reply[1]}")
    if reply[0] == "refused":
        assert reply[2].strip(), f"{reply[1]} without a message"
        return Refused(reply[1], reply[2])
    return reply[1]


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
def test_fuzz_config_documents_and_overrides(scratch, worker, doc, overrides):
    path = _write(scratch, "c.yaml", yaml.safe_dump(doc, allow_unicode=True))
    outcome(worker, "config", path, overrides)


@FAST
@given(text=st.one_of(st.text(max_size=300), st.text(alphabet=":-[]{}&*!|>'\"#%@` \n\tab1.,?",
                                                     max_size=200)))
def test_fuzz_config_raw_yaml_text(scratch, worker, text):
    path = _write(scratch, "t.yaml", text)
    outcome(worker, "config", path, ())


def _laughs(leaf):
    """A "billion laughs": nine levels of aliases, ten each, over `leaf` (10**9 leaves)."""
    return f"a: &a [{', '.join([leaf] * 10)}]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


VALID_YAML = "Global: {epochs: 2}\nArch: {name: mobilenet_v1, class_num: 10}\n"


@pytest.mark.parametrize("text", [
    _laughs("x") + "Global: {epochs: 2, output_dir: *i}\nArch: {name: mobilenet_v1, class_num: 10}\n",
    _laughs("x") + VALID_YAML + "DataLoader: {Train: {transforms: [{Resize: {size: *i}}, {Normalize: *i}, *i]}}\n",
    _laughs("1") + VALID_YAML + "Metric: {topk: *i}\n",
    _laughs("x") + VALID_YAML,                               # aliases the schema does not know
    "Global: " + "[" * 5000 + "]" * 5000 + "\n",            # deeper than Python's recursion limit
    "Global: {epochs: 2}\nArch: {name: mobilenet_v1, class_num: " + "9" * 5000 + "}\n",
    "\ufeffGlobal: {epochs: 2}\x00\n",
], ids=["laughs-output_dir", "laughs-transforms", "laughs-topk", "laughs-unknown-keys", "deep",
        "huge-int", "nul"])
def test_hostile_yaml_documents_are_refused_quickly(scratch, worker, text):
    """Each is a bad config: it must be refused (ConfigError naming the file, a short message)
    within the worker's time limit, never loaded and never a hang."""
    path = _write(scratch, "h.yaml", text)
    got = outcome(worker, "config", path, ())
    assert isinstance(got, Refused) and got.kind == "ConfigError", got
    assert path in got.message and len(got.message) < 3000, got.message[:3000]


CODE_TAGS = ["!!python/object/apply:os.system", "!!python/object/new:os.system",
             "!!python/object/apply:subprocess.call", "!!python/name:os.system",
             "!!python/module:os"]


@pytest.mark.parametrize("tag", CODE_TAGS)
def test_yaml_that_would_run_code_is_refused_and_runs_nothing(scratch, worker, tmp_path, tag):
    """A config is data: a tag that makes an unsafe YAML loader call a function must be refused
    naming the file and the tag, and the command it carries (creating a marker file) must not
    run, neither in the file, nor in a "billion laughs" of such calls, nor in an -o value."""
    marker = tmp_path / "pwned"
    call = f"{tag} [[touch, {marker}]]" if "subprocess" in tag else f"{tag} [touch {marker}]"
    if tag.startswith(("!!python/name", "!!python/module")):
        call = f"{tag} ''"
    for text in (f"Global: {{epochs: 2, output_dir: {call}}}\nArch: {{name: mobilenet_v1, class_num: 10}}\n",
                 _laughs(call) + VALID_YAML):
        path = _write(scratch, "code.yaml", text)
        got = outcome(worker, "config", path, ())
        assert isinstance(got, Refused) and got.kind == "ConfigError", got
        assert path in got.message and tag[2:] in got.message, got.message
        assert not marker.exists()
    path = _write(scratch, "ok.yaml", VALID_YAML)
    got = outcome(worker, "config", path, [f"Global.epochs={call}"])
    assert isinstance(got, Refused) and "Global.epochs" in got.message and not marker.exists(), got
    # a value of a str key is kept as the text it is, not run
    got = outcome(worker, "config", path, [f"Global.output_dir={call}"])
    assert got["Global"]["output_dir"] == call and not marker.exists(), got


def test_hostile_override_values(scratch, worker):
    path = _write(scratch, "ok.yaml", yaml.safe_dump(VALID))
    for opt in ["Global.epochs=" + "[" * 5000, "Global.epochs=" + "(" * 500 + ")" * 500,
                "Arch.class_num=" + "1" * 5000, "Global.seed=" + "9" * 5000,
                "Global.epochs=" + "-" * 1000 + "1", "²=1", "Global.image_shape.²=1",
                "DataLoader.Train.transforms.٣=1"]:
        got = outcome(worker, "config", path, [opt])
        assert isinstance(got, Refused) and got.kind == "ConfigError", (opt[:80], got)
        assert f"-o {opt[:20]}" in got.message or "bad -o option" in got.message, got.message[:500]
    # a long but valid str value loads
    assert outcome(worker, "config", path, ["Global.output_dir=" + "9" * 10000])["Global"]["output_dir"] == "9" * 10000


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
def test_fuzz_image_loader(scratch, worker, data):
    img = outcome(worker, "image", _write(scratch, "img.bin", data))
    if not isinstance(img, Refused):
        assert img["mode"] == "RGB" and img["size"][0] > 0 and img["size"][1] > 0, img


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
def test_fuzz_fluid_tensor_reader(scratch, worker, data):
    arr = outcome(worker, "fluid-tensor", _write(scratch, "conv2d_0.w_0", data))
    if not isinstance(arr, Refused):
        assert arr["nbytes"] <= len(data), arr


@pytest.mark.parametrize("dims", [[2 ** 62, 4], [2 ** 32, 2 ** 32], [0, 2 ** 63 - 1], [2 ** 63 - 1]])
def test_fluid_tensor_with_overflowing_shape(scratch, worker, dims):
    desc = b"\x08\x05" + b"".join(b"\x10" + _varint(d) for d in dims)
    data = b"\0" * 16 + len(desc).to_bytes(4, "little") + desc
    got = outcome(worker, "fluid-tensor", _write(scratch, "big.w_0", data))
    assert isinstance(got, Refused) and got.kind == "FluidParamsError" and "big.w_0" in got.message, got


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
def test_fuzz_list_and_label_files(scratch, worker, lines, class_num, newline):
    path = _write(scratch, "list.txt", newline.join(lines))
    got = outcome(worker, "list-file", path, class_num)
    if isinstance(got, list):
        assert got and all(isinstance(lab, int) and 0 <= lab for _, lab, _ in got)
    outcome(worker, "label-file", path, class_num)


@pytest.mark.parametrize("text", [" 172944503", "0 a\n999999999999 b", "-1 x", "0 a\n0 b"])
def test_label_file_with_huge_or_bad_ids(scratch, worker, text):
    """Found by the slow fuzz budget: one id of 172944503 made the gap check build a set of
    172 million ints (a hang, then out of memory)."""
    got = outcome(worker, "label-file", _write(scratch, "ids.txt", text))
    assert isinstance(got, Refused) and "ids.txt" in got.message, got


@FAST
@given(data=st.binary(max_size=200))
def test_fuzz_list_file_bytes(scratch, worker, data):
    outcome(worker, "list-file", _write(scratch, "blist.txt", data), None)


# ------------------------------------------------------------------ weight files

def _seed_weights():
    folder = tempfile.mkdtemp(prefix="ppm-fuzz-seed-")
    try:
        p = save_safe_weights(os.path.join(folder, "w.safetensors"),
                              {"a.weight": np.ones((2, 3), np.float32), "b": np.arange(3)},
                              {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25})
        with open(p, "rb") as f:
            safe = f.read()
        pick = pickle.dumps({"a.weight": np.ones((2, 3), np.float32)}, protocol=2)
        return [safe, pick, pickle.dumps({"x": np.arange(4)}, protocol=4)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SEED_WEIGHTS = _seed_weights()


def _check_weight_readers(worker, path):
    outcome(worker, "safetensors", path)
    outcome(worker, "pickle-weights", path)


@FAST
@given(data=mutated(SEED_WEIGHTS))
def test_fuzz_weight_readers(scratch, worker, data):
    _check_weight_readers(worker, _write(scratch, "w.safetensors", data))


@pytest.mark.parametrize("data", [
    # found by the slow budget: LONG_BINPUT 999335818 made the C unpickler's memo array
    # gigabytes long (a hang, then out of memory) after 70 bytes
    b"\x80\x02}q\x00X<\x00\x00\x00a.weightq\x01cnumpy._core.multiarray\n_reconstruct\nq\x02cnumpy"
    b"\nndarr\x8a\xa7\x90;ay\nq\x03K\x00\x85",
    # numpy's _reconstruct allocating a shape far larger than the file
    b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x05\x00\x00\x00\x00\x01"
    b"\x85C\x01b\x87R.",
])
def test_hostile_pickles(scratch, worker, data):
    got = outcome(worker, "pickle-weights", _write(scratch, "bomb.pdparams", data))
    assert isinstance(got, Refused) and "bomb.pdparams" in got.message, got


# ------------------------------------------------------------------ bigger budgets (slow)

@pytest.mark.slow
@SLOW
@given(doc=documents(), overrides=st.lists(override_text, max_size=4))
def test_fuzz_config_slow(scratch, worker, doc, overrides):
    path = _write(scratch, "cs.yaml", yaml.safe_dump(doc, allow_unicode=True))
    outcome(worker, "config", path, overrides)


@pytest.mark.slow
@SLOW
@given(data=mutated(SEED_IMAGES))
def test_fuzz_image_loader_slow(scratch, worker, data):
    outcome(worker, "image", _write(scratch, "imgs.bin", data))


@pytest.mark.slow
@SLOW
@given(data=mutated(SEED_TENSORS))
def test_fuzz_fluid_tensor_reader_slow(scratch, worker, data):
    outcome(worker, "fluid-tensor", _write(scratch, "conv2d_1.w_0", data))


@pytest.mark.slow
@SLOW
@given(lines=st.lists(line_text, max_size=12), class_num=st.one_of(st.none(), st.integers(1, 20)))
def test_fuzz_list_and_label_files_slow(scratch, worker, lines, class_num):
    path = _write(scratch, "lists.txt", "\n".join(lines))
    outcome(worker, "list-file", path, class_num)
    outcome(worker, "label-file", path, class_num)


@pytest.mark.slow
@SLOW
@given(data=mutated(SEED_WEIGHTS))
def test_fuzz_weight_readers_slow(scratch, worker, data):
    _check_weight_readers(worker, _write(scratch, "ws.safetensors", data))
