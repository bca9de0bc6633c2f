"""tools/train.py as it runs on a machine with one CUDA GPU, on this CPU build of Paddle.

    python tests/gpu_on_cpu.py -c CONFIG [-o Section.key=value ...]     # same arguments as tools/train.py

No GPU build of Paddle 3 can be installed here, so the GPU branch of the trainer (AMP's
`auto_cast` + `GradScaler`, O2 `decorate`) would otherwise never run. This opens the doors Paddle
and ppmobilenet keep shut on a CPU, and nothing else:
- ppmobilenet's own question "is there a GPU?" (`paddle.is_compiled_with_cuda()`,
  `paddle.device.cuda.device_count()`, asked from ppmobilenet code only) is answered yes, and
  `paddle.set_device("gpu")` selects the CPU;
- `paddle.amp.GradScaler` (any subclass too) and `paddle.amp.decorate` see a GPU place (with
  float16 support) when they are set up: their CPU check would otherwise turn them into no-ops.
For the tests of skipped steps it can also make the scaled loss of chosen steps infinite, as an
overflow in float16 does on a GPU (the loss itself stays finite; the gradients of the scaled loss
are not): $PPMOBILENET_TEST_INF_LOSS_AT ("all" or global step numbers, counted from
$PPMOBILENET_TEST_STEP_OFFSET + 1: the checkpoint's step when the run resumes).
Everything then runs for real on the CPU: the scaler multiplies the loss, unscales the gradients
with Paddle's `check_finite_and_unscale` kernel, skips steps whose gradients are not finite and
adapts its scale; decorate casts the weights and registers its float32 save hook.
`paddle.amp.auto_cast` keeps its own CPU check (it stays off and the math stays float32): Paddle
has no float16 CPU kernels for conv2d, matmul, batch_norm, relu, add or momentum, so neither
float16 compute nor an O2 step can run here (docs/training.md, "never run on a GPU here").
"""
import contextlib
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ppmobilenet.cpu import configure_cpu  # noqa: E402

configure_cpu()  # before paddle is imported, as tools/train.py does

import paddle  # noqa: E402
import paddle.amp.auto_cast  # noqa: E402,F401  (the module; paddle.amp.auto_cast is the function)
import paddle.amp.grad_scaler  # noqa: E402,F401

_AUTO_CAST = sys.modules["paddle.amp.auto_cast"]
_GRAD_SCALER = sys.modules["paddle.amp.grad_scaler"]


class _GpuPlace:
    """The tracer's expected place as AMP's set-up code sees it: a GPU."""

    def __init__(self, real):
        self._real = real

    def is_gpu_place(self):
        return True

    def is_xpu_place(self):
        return False

    def is_custom_place(self):
        return False

    def __getattr__(self, name):
        return getattr(self._real, name)


class _Tracer:
    def __init__(self, real):
        object.__setattr__(self, "_real", real)

    @property
    def _expected_place(self):
        return _GpuPlace(self._real._expected_place)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)


def show_a_gpu(module):
    """Make `module` (a paddle.amp module) see a float16-capable GPU place; -> the undo."""
    tracer, fp16 = module._dygraph_tracer, getattr(module, "_is_gpu_float16_supported", None)
    module._dygraph_tracer = lambda: _Tracer(tracer())
    if fp16 is not None:
        module._is_gpu_float16_supported = lambda: True

    def undo():
        module._dygraph_tracer = tracer
        if fp16 is not None:
            module._is_gpu_float16_supported = fp16
    return undo


@contextlib.contextmanager
def gpu_place_for(module):
    """While it runs, `module` sees a GPU place (auto_cast, in the same module, must not)."""
    undo = show_a_gpu(module)
    try:
        yield
    finally:
        undo()


def _decorate(real):
    def decorate(*args, **kwargs):
        with gpu_place_for(_AUTO_CAST):
            return real(*args, **kwargs)
    return decorate


def _yes_for_ppmobilenet(real, answer):
    """`answer` when ppmobilenet asks; Paddle's own callers (paddle.seed, RNG states) get the truth."""
    def ask(*args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("ppmobilenet"):
            return answer
        return real(*args, **kwargs)
    return ask


INF_LOSS_AT = "PPMOBILENET_TEST_INF_LOSS_AT"
STEP_OFFSET = "PPMOBILENET_TEST_STEP_OFFSET"


def overflow_at(steps, offset=0):
    """Make the scaled loss infinite at the given global steps (a set of ints, or "all"): the
    trainer scales the loss once a step, so the scaler's calls count the steps."""
    scale, done = _GRAD_SCALER.AmpScaler.scale, [offset]

    def scaled(self, var):
        out = scale(self, var)
        done[0] += 1
        return out * float("inf") if steps == "all" or done[0] in steps else out
    _GRAD_SCALER.AmpScaler.scale = scaled


def pretend_one_gpu():
    set_device = paddle.set_device
    paddle.set_device = lambda device: set_device("cpu" if str(device).startswith("gpu") else device)
    paddle.is_compiled_with_cuda = _yes_for_ppmobilenet(paddle.is_compiled_with_cuda, True)
    paddle.device.cuda.device_count = _yes_for_ppmobilenet(paddle.device.cuda.device_count, 1)
    # paddle.amp.grad_scaler asks for the place only when a scaler (or a subclass) is made
    show_a_gpu(_GRAD_SCALER)
    paddle.amp.decorate = _decorate(paddle.amp.decorate)


if __name__ == "__main__":
    pretend_one_gpu()
    if os.environ.get(INF_LOSS_AT):
        at = os.environ[INF_LOSS_AT]
        overflow_at("all" if at == "all" else {int(x) for x in at.split(",")},
                    int(os.environ.get(STEP_OFFSET, "0")))
    train = os.path.join(ROOT, "tools", "train.py")
    sys.argv = [train] + sys.argv[1:]
    runpy.run_path(train, run_name="__main__")
