"""The packed CPU path for small depthwise convolutions (ppmobilenet/kernels/packed.py), the
pure-Paddle fallback of the compiled kernels: the same numbers as Paddle's own conv, forward and
backward, on every shape MobileNet meets; only in dygraph; switched on by tools/train.py on CPU
when the compiled kernels are off or unavailable, unless Global.cpu_packed_depthwise is off.
Its speed is measured in docs/benchmarks.md, not here."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from engine_helpers import TRAIN, demo_subset, run_tool, tiny_config, vdl_scalars
from ppmobilenet.models import build_model_from_arch
from ppmobilenet.kernels.layers import use_packed_depthwise
from ppmobilenet.kernels.packed import MAX_PLANE, PackedDepthwiseConv2D, packed_depthwise_conv

V1 = {"name": "mobilenet_v1", "class_num": 10, "scale": 0.25, "head": "classic"}
V2 = {"name": "mobilenet_v2", "class_num": 10, "scale": 0.5}


@pytest.mark.parametrize("n,c,h,w,stride", [(4, 8, 8, 8, 1), (4, 8, 8, 8, 2), (3, 5, 7, 7, 1),
                                            (3, 5, 7, 7, 2), (2, 16, 2, 2, 1), (1, 3, 1, 1, 1),
                                            (5, 4, 3, 6, 2), (2, 6, 4, 5, 2)])
def test_same_outputs_and_gradients_as_the_plain_conv(n, c, h, w, stride):
    rng = np.random.RandomState(n * 100 + c * 10 + h)
    x0 = rng.standard_normal((n, c, h, w)).astype("float32")
    w0 = rng.standard_normal((c, 1, 3, 3)).astype("float32")
    upstream = None
    results = []
    for fn in (lambda x, k: F.conv2d(x, k, stride=stride, padding=1, groups=c),
               lambda x, k: packed_depthwise_conv(x, k, stride)):
        x, k = paddle.to_tensor(x0, stop_gradient=False), paddle.to_tensor(w0, stop_gradient=False)
        y = fn(x, k)
        if upstream is None:
            upstream = paddle.to_tensor(rng.standard_normal(y.shape).astype("float32"))
        (y * upstream).sum().backward()
        results.append((y.numpy(), x.grad.numpy(), k.grad.numpy()))
    (y_ref, gx_ref, gw_ref), (y, gx, gw) = results
    assert y.shape == y_ref.shape
    # the same products, summed in the kernel's order for the plane's width: float rounding only
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-5, atol=1e-5)  # summed in another order


@pytest.mark.parametrize("arch,depthwise", [(V1, 13), (V2, 17)])
def test_models_keep_their_parameters_and_outputs(arch, depthwise):
    paddle.seed(0)
    plain = build_model_from_arch(arch)
    packed = build_model_from_arch(arch)
    packed.set_state_dict(plain.state_dict())
    assert use_packed_depthwise(packed) == depthwise
    assert list(packed.state_dict()) == list(plain.state_dict())
    assert sum(isinstance(l, PackedDepthwiseConv2D) for l in packed.sublayers()) == depthwise
    x = paddle.to_tensor(np.random.RandomState(1).standard_normal((4, 3, 64, 64)).astype("float32"))
    for model in (plain, packed):
        model.train()
    y_plain, y_packed = plain(x), packed(x)
    assert x.shape[2] * x.shape[3] > MAX_PLANE  # big early planes, small late ones: both paths
    np.testing.assert_allclose(y_packed.numpy(), y_plain.numpy(), rtol=1e-5, atol=1e-5)
    # a traced program keeps Paddle's own conv: no transposes or concats are exported
    packed.eval()
    static = paddle.jit.to_static(packed, input_spec=[paddle.static.InputSpec([None, 3, 64, 64])],
                                  full_graph=True)
    ops = [op.name() for op in static.forward.concrete_program.main_program.global_block().ops]
    assert not [o for o in ops if "transpose" in o or "concat" in o], ops


def test_tools_train_uses_it_on_cpu_unless_switched_off(tmp_path, tmp_path_factory):
    data = demo_subset(tmp_path_factory.mktemp("packed-data"),
                       str(tmp_path_factory.getbasetemp() / "engine-cache"))
    losses, logs = {}, {}
    for name, on in (("packed", True), ("plain", False)):
        cfg = tiny_config(tmp_path / f"{name}.yaml", tmp_path / name, data, epochs=1,
                          Global={"seed": 0, "eval_during_train": False, "device": "cpu",
                                  "cpu_packed_depthwise": on})
        r = run_tool(TRAIN, cfg, extra_env={"PPMOBILENET_CPU_KERNELS": "0"})  # the fallback
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        losses[name] = [v for _, v in vdl_scalars(tmp_path / name / "vdl", "train/loss")]
        logs[name] = (tmp_path / name / "train.log").read_text()
    assert "take the packed CPU path" in logs["packed"]
    assert "take the packed CPU path" not in logs["plain"]
    # the first loss comes from the same forward pass, the second after one update with the same
    # gradients; later ones drift apart as float rounding grows, as with another thread count
    assert losses["packed"][0] == pytest.approx(losses["plain"][0], rel=1e-6), losses
    assert losses["packed"][1] == pytest.approx(losses["plain"][1], rel=1e-4), losses
