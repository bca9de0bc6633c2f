"""MobileNetV3 small and large: sizes against PaddleClas's and torchvision's own models and
published figures, the two lineages' differences one by one, and the deploy path (export,
Paddle Lite opt for arm + x86 with the x86 numeric check, ONNX Runtime)."""
import os

import numpy as np
import paddle
import pytest
from paddle import nn

from deploy_helpers import lite_or_skip, onnx_or_skip
from ecosystem_refs import fill_paddle, norm_error, paddleclas_model, relative_error, torchvision_models
from ppmobilenet.config import load_config
from ppmobilenet.models import (MODELS, MobileNetV3, build_model, build_model_from_arch,
                                count_macs, count_parameters)
from ppmobilenet.models.blocks import SqueezeExcitation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALES = (0.35, 0.5, 0.75, 1.0, 1.25)
# PaddleClas's model docs (docs/zh_CN/models/ImageNet1k/MobileNetV3.md): params (M), FLOPs (G)
PUBLISHED = {("large", 1.25): (7.44, 0.714), ("large", 1.0): (5.47, 0.450),
             ("large", 0.75): (3.91, 0.296), ("large", 0.5): (2.67, 0.138),
             ("large", 0.35): (2.10, 0.077), ("small", 1.25): (3.62, 0.195),
             ("small", 1.0): (2.94, 0.123), ("small", 0.75): (2.37, 0.088),
             ("small", 0.5): (1.90, 0.043), ("small", 0.35): (1.66, 0.026)}


def paddleclas_v3(size, scale):
    return paddleclas_model("legendary_models.mobilenet_v3",
                            f"MobileNetV3_{size}_x{str(scale).replace('.', '_')}")


@pytest.mark.parametrize("size, scale", sorted(PUBLISHED))
def test_paddle_lineage_sizes_are_paddleclas(size, scale):
    """Parameters and multiply-adds equal those of PaddleClas's own model, counted the same way;
    against its published table, parameters agree to one unit of the last digit it prints (the
    table rounds some rows and truncates others: large x1.0 says 5.47 for the 5,480,206 of its
    own code), FLOPs (about 2 x MACs plus element-wise work, as it counts them) within 4%."""
    ours, theirs = build_model(f"mobilenet_v3_{size}", scale=scale), paddleclas_v3(size, scale)
    params, macs = count_parameters(ours), count_macs(ours, 224)
    assert params == count_parameters(theirs)
    assert macs == count_macs(theirs, 224)
    published_params, published_gflops = PUBLISHED[(size, scale)]
    assert abs(params / 1e6 - published_params) < 0.011
    assert abs(2 * macs / 1e9 - published_gflops) / published_gflops < 0.04


def test_published_headline_figures():
    """The figures everyone quotes: large x1.0 5.47M params / 0.45 GFLOPs, small 2.94M / 0.12."""
    large, small = build_model("mobilenet_v3_large"), build_model("mobilenet_v3_small")
    assert round(count_parameters(large) / 1e6, 2) in (5.47, 5.48)
    assert round(count_parameters(small) / 1e6, 2) == 2.94
    assert round(2 * count_macs(large) / 1e9, 2) == 0.44  # 219.8M MACs; PaddleClas: 0.45 GFLOPs
    assert round(2 * count_macs(small) / 1e9, 2) == 0.12


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("scale", SCALES)
def test_torchvision_lineage_sizes_are_torchvision(size, scale):
    import torch
    _, tv3 = torchvision_models()
    theirs = getattr(tv3, f"mobilenet_v3_{size}")(width_mult=scale)
    ours = build_model(f"mobilenet_v3_{size}", scale=scale, variant="torchvision")
    assert count_parameters(ours) == sum(p.numel() for p in theirs.parameters())
    if scale == 1.0:  # torchvision's model card: num_params and GFLOPS
        assert count_parameters(ours) == {"small": 2_542_856, "large": 5_483_032}[size]
        assert round(count_macs(ours) / 1e9, 2) == {"small": 0.06, "large": 0.22}[size]
    with torch.no_grad():
        assert list(theirs(torch.zeros(1, 3, 64, 64)).shape) == [1, 1000]


# ------------------------------------------------------------------ the lineages, difference by difference

def both(size="small", scale=1.0, class_dim=1000):
    return (build_model(f"mobilenet_v3_{size}", scale=scale, class_dim=class_dim),
            build_model(f"mobilenet_v3_{size}", scale=scale, class_dim=class_dim, variant="torchvision"))


def test_batchnorm_settings():
    pd, tv = both()
    assert (pd.conv1.bn._momentum, pd.conv1.bn._epsilon) == (0.9, 1e-5)
    assert (tv.conv1.bn._momentum, tv.conv1.bn._epsilon) == (0.99, 1e-3)
    # PaddleClas keeps L2 decay off BN scale and offset; torchvision applies it everywhere
    assert pd.blocks[3].dwise.bn.weight.regularizer._coeff == 0.0
    assert tv.blocks[3].dwise.bn.weight.regularizer is None


def test_expansion_conv_kept_only_in_the_paddle_lineage():
    """Block 0 keeps its width (16 -> 16): PaddleClas still has the 1x1 expansion conv."""
    for size in ("small", "large"):
        pd, tv = both(size)
        assert pd.blocks[0].expand is not None and tv.blocks[0].expand is None
        assert all(b.expand is not None for b in list(pd.blocks)[1:] + list(tv.blocks)[1:])


def test_squeeze_excitation_widths_and_gate():
    pd, tv = both("large")
    # block 3 expands to 72: PaddleClas squeezes to 72 // 4, torchvision to make_divisible(18)
    assert pd.blocks[3].se.reduce.weight.shape[0] == 18
    assert tv.blocks[3].se.reduce.weight.shape[0] == 24
    se = SqueezeExcitation(4, 2, slope=0.2)
    se.reduce.weight.set_value(np.ones([2, 4, 1, 1], np.float32))
    se.reduce.bias.set_value(np.zeros([2], np.float32))
    se.expand.weight.set_value(np.full([4, 2, 1, 1], 0.5, np.float32))
    se.expand.bias.set_value(np.zeros([4], np.float32))
    x = paddle.full([1, 4, 3, 3], 0.25)
    # pool 0.25 -> reduce: 1.0 -> relu -> expand: 1.0 -> gate clip(0.2 * 1 + 0.5) = 0.7
    np.testing.assert_allclose(se(x).numpy(), 0.25 * 0.7, rtol=1e-6)
    se.slope = 1.0 / 6.0
    np.testing.assert_allclose(se(x).numpy(), 0.25 * (1 / 6 + 0.5), rtol=1e-6)
    assert pd.blocks[3].se.slope == 0.2 and abs(tv.blocks[3].se.slope - 1 / 6) < 1e-12


@pytest.mark.parametrize("size, scale, last, head", [
    ("large", 0.5, (480, 480), (1280, 640)), ("small", 0.35, (200, 192), (1280, 360)),
    ("large", 1.25, (1200, 1200), (1280, 1600))])
def test_tail_widths_and_head_bias(size, scale, last, head):
    pd, tv = both(size, scale)
    assert (pd.lastconv.conv.weight.shape[0], tv.lastconv.conv.weight.shape[0]) == last
    assert (pd.pre_fc.weight.shape[1], tv.pre_fc.weight.shape[1]) == head
    assert pd.pre_fc.bias is None and tv.pre_fc.bias is not None


def test_dropout_scales_at_inference_only_in_the_paddle_lineage():
    """PaddleClas's Dropout(mode="downscale_in_infer") multiplies by 0.8 at inference;
    torchvision's inverted dropout passes through."""
    paddle.seed(0)
    for model, factor in zip(both("small", 0.5, class_dim=5), (0.8, 1.0)):
        fill_paddle(model, 0)
        x = paddle.randn([2, 3, 64, 64])
        with paddle.no_grad():
            h = model.pool(model.lastconv(model.blocks(model.conv1(x))))
            h = nn.functional.hardswish(model.pre_fc(paddle.reshape(h, [2, -1])))
            np.testing.assert_allclose(model(x).numpy(), model.fc(h * factor).numpy(), rtol=1e-5)
        model.train()  # training drops: two passes differ
        assert not np.allclose(model(x).numpy(), model(x).numpy())


def test_registry_and_arch():
    assert sorted(MODELS) == ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
    m = build_model_from_arch({"name": "mobilenet_v3_small", "class_num": 4, "scale": 0.5,
                               "variant": "torchvision"})
    assert isinstance(m, MobileNetV3) and (m.size, m.variant, m.scale) == ("small", "torchvision", 0.5)
    assert m.fc.weight.shape == [512, 4] and m.arch_name == "mobilenet_v3_small"
    assert type(m)(**m.config()).config() == m.config()
    with pytest.raises(ValueError, match="variant must be one of"):
        MobileNetV3(variant="timm")
    with pytest.raises(ValueError, match="size must be one of"):
        MobileNetV3(size="medium")
    with pytest.raises(ValueError, match="scale must be > 0"):
        MobileNetV3(scale=0)


@pytest.mark.parametrize("name", ["MobileNetV3_small_x1_0.yaml", "MobileNetV3_large_x1_0.yaml"])
def test_configs_carry_paddleclas_recipe(name):
    cfg = load_config(os.path.join(ROOT, "configs", name), [])
    large = "large" in name
    assert cfg["Arch"]["name"] == ("mobilenet_v3_large" if large else "mobilenet_v3_small")
    assert cfg["Arch"]["variant"] == "paddle" and cfg["Global"]["epochs"] == 360
    assert cfg["Optimizer"]["lr"]["learning_rate"] == (0.65 if large else 1.3)
    assert cfg["Optimizer"]["lr"]["warmup_epoch"] == 5 and cfg["Optimizer"]["lr"]["name"] == "Cosine"
    assert cfg["Optimizer"]["regularizer"]["coeff"] == 2e-5 and cfg["Loss"]["epsilon"] == 0.1
    assert cfg["DataLoader"]["Train"]["sampler"]["batch_size"] == (256 if large else 512)
    build_model_from_arch(cfg["Arch"])


# ------------------------------------------------------------------ deploy

def _program_ops(pdmodel):
    from paddle.base.proto import framework_pb2
    prog = framework_pb2.ProgramDesc()
    with open(pdmodel, "rb") as f:
        prog.ParseFromString(f.read())
    return {op.type for block in prog.blocks for op in block.ops}


@pytest.mark.parametrize("name, variant", [("mobilenet_v3_small", "paddle"),
                                           pytest.param("mobilenet_v3_large", "torchvision", marks=pytest.mark.slow)])
def test_export_converts_with_lite_and_onnx_and_matches(tmp_path, name, variant):
    """Random (filled) weights -> export with Lite opt for arm and x86 and ONNX; export_model's
    own checks (x86 .nb and ONNX Runtime against Paddle Inference) pass, and so do ours."""
    lite = lite_or_skip()
    onnx_or_skip()
    from ppmobilenet.deploy.export import export_model
    from ppmobilenet.deploy.predictors import LitePredictor, OnnxPredictor, PaddlePredictor
    model = fill_paddle(build_model(name, class_dim=10, scale=1.0, variant=variant), 0)
    weights = str(tmp_path / "w.pdparams")
    paddle.save(model.state_dict(), weights)
    out = str(tmp_path / "inference")
    cfg = load_config(os.path.join(ROOT, "configs", name.replace("mobilenet_v3", "MobileNetV3") + "_x1_0.yaml"),
                      [f"Arch.variant={variant}", "Arch.class_num=10", f"Global.pretrained_model={weights}",
                       f"Global.save_inference_dir={out}", "Global.image_shape=[3, 96, 96]",
                       "Export.softmax=false"])
    logs = []
    export_model(cfg, lite_targets=["arm", "x86"], onnx=True, log=logs.append)
    assert any(line.startswith("Paddle Lite x86 .nb vs Paddle Inference") and line.endswith("-> ok")
               for line in logs), logs
    assert {"hard_swish", "hard_sigmoid", "dropout"} <= _program_ops(os.path.join(out, "lite", "inference.pdmodel"))
    for target in ("arm", "x86"):
        assert os.path.getsize(os.path.join(out, "lite", f"{name}_{target}.nb")) > 100_000
    x = np.random.RandomState(2).normal(0, 1, (3, 3, 96, 96)).astype(np.float32)
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x)).numpy()
    paddle_out = PaddlePredictor(out).predict(x)
    assert relative_error(paddle_out, ref) < 1e-4
    lite_out = LitePredictor(os.path.join(out, "lite", f"{name}_x86.nb"), runtime=lite).predict(x)
    assert relative_error(lite_out, paddle_out) < 1e-4
    onnx_out = OnnxPredictor(os.path.join(out, "inference.onnx")).predict(x)
    assert relative_error(onnx_out, paddle_out) < 1e-4
    assert relative_error(paddle_out[0], paddle_out[1]) > 1e-2  # the outputs depend on the input


@pytest.mark.slow
def test_int8_export_runs_and_agrees_with_fp32(tmp_path):
    """tools/export.py's INT8 path on MobileNetV3 small (hard-swish, squeeze-excitation):
    inference_int8.onnx is written, every conv but the float stem reads int8 weights, and on 100
    real digit images (the calibration set, eval preprocessing) ONNX Runtime's INT8 logits stay
    near fp32's. Seen: 0.13 worst relative error, top-1 agrees on 96 of 100 (random weights:
    their margins are small, so some flips are rounding, not a fault)."""
    onnx_or_skip()
    import onnx
    from ppmobilenet.deploy.export import export_model
    from ppmobilenet.deploy.int8 import calibration_images, stem_nodes
    from ppmobilenet.deploy.predictors import OnnxPredictor
    model = fill_paddle(build_model("mobilenet_v3_small", class_dim=10, scale=1.0, variant="paddle"), 0)
    weights = str(tmp_path / "w.pdparams")
    paddle.save(model.state_dict(), weights)
    out = str(tmp_path / "inference")
    cfg = load_config(os.path.join(ROOT, "configs", "MobileNetV3_small_x1_0.yaml"), [
        "Arch.class_num=10", f"Global.pretrained_model={weights}", f"Global.save_inference_dir={out}",
        "Global.image_shape=[3, 64, 64]", "Export.softmax=false", "DataLoader.Train.dataset.name=DemoDigits",
        "DataLoader.Eval.dataset.name=DemoDigits", "DataLoader.Eval.transforms.0.Resize.size=73",
        "DataLoader.Eval.transforms.1.CenterCrop.size=64"])
    logs = []
    export_model(cfg, lite_targets=[], onnx=True, int8=True, calibration_images=100, log=logs.append)
    assert any(line.startswith("INT8 ONNX Runtime vs fp32 ONNX Runtime") for line in logs), logs
    quantized = onnx.load(os.path.join(out, "inference_int8.onnx"))
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    assert len(convs) > 40   # the SE 1x1 convs too
    # float: the stem conv and the first depthwise conv (block 0's 1x1 expand between them is int8)
    assert [n.name for n in convs if n.input[1] not in dequantized] == stem_nodes(quantized)
    assert len(stem_nodes(quantized)) == 2
    x = calibration_images(cfg, 100)
    fp32 = OnnxPredictor(os.path.join(out, "inference.onnx")).predict(x)
    int8 = OnnxPredictor(os.path.join(out, "inference_int8.onnx")).predict(x)
    assert norm_error(int8, fp32) < 0.25
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.9
