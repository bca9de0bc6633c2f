"""The networks: MobileNetV2's structure in both lineages, the seed facade, the registry and the
model summary (MobileNetV3's own tests are in test_mobilenet_v3.py)."""
import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v1 as vision_v1
from paddle.vision.models import mobilenet_v2 as vision_v2

from ppmobilenet.models import (MODELS, MobileNet, MobileNetV1, MobileNetV2, build_model,
                                build_model_from_arch, count_macs, count_parameters)
from ppmobilenet.models.blocks import InvertedResidual


def weight_shapes(layer):
    """Shapes of conv / BN / fc weights in creation order."""
    return [list(sub.weight.shape) for sub in layer.sublayers()
            if isinstance(sub, (nn.Conv2D, nn.BatchNorm2D, nn.Linear))]


def test_v2_parameter_count_is_the_fluid_one():
    """paddle.vision's (and torchvision's) V2 has 3,504,872 trainable parameters; the fluid model
    keeps the t=1 block's 1x1 expansion (32 -> 32 conv + BN: 1,088 more)."""
    assert count_parameters(vision_v2(scale=1.0)) == 3_504_872
    assert count_parameters(MobileNetV2(class_dim=1000)) == 3_504_872 + 32 * 32 + 2 * 32


def test_v2_layer_shapes_match_paddle_vision_but_the_t1_expansion():
    ours = weight_shapes(MobileNetV2(class_dim=1000))
    # conv1 conv + BN, then the first block's expansion conv + BN (which paddle.vision omits).
    assert ours[2:4] == [[32, 32, 1, 1], [32]]
    assert ours[:2] + ours[4:] == weight_shapes(vision_v2(scale=1.0))


def test_v2_shortcuts_are_the_stride1_equal_channel_blocks():
    blocks = [b for b in MobileNetV2(scale=0.5).sublayers() if isinstance(b, InvertedResidual)]
    assert len(blocks) == 17
    for block in blocks:
        stride = block.dwise.conv._stride[0]
        equal = block.expand.conv.weight.shape[1] == block.linear.conv.weight.shape[0]
        assert block.use_shortcut == (stride == 1 and equal)
    assert sum(b.use_shortcut for b in blocks) == 10


def test_v2_shortcut_really_adds_the_input():
    block = InvertedResidual(8, 48, 8, 1, use_shortcut=True)
    block.eval()
    x = paddle.randn([2, 8, 5, 5])
    body = block.linear(block.dwise(block.expand(x)))
    np.testing.assert_allclose(block(x).numpy(), (x + body).numpy(), rtol=1e-6)


def test_v2_projection_is_linear_and_wider_scale_widens_last_conv():
    model = MobileNetV2(scale=1.5)
    assert isinstance(model.blocks[0].linear.act, nn.Identity)
    assert model.conv9.conv.weight.shape[0] == 1920
    assert MobileNetV2(scale=0.5).conv9.conv.weight.shape[0] == 1280


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_v2_torchvision_lineage_is_paddle_visions_network(scale):
    """variant="torchvision": widths rounded to multiples of 8, no t=1 expansion conv; the layer
    shapes are paddle.vision's (and torchvision's: 3,504,872 trainable at x1.0)."""
    ours = MobileNetV2(class_dim=1000, scale=scale, variant="torchvision")
    assert weight_shapes(ours) == weight_shapes(vision_v2(scale=scale))
    assert count_parameters(ours) == count_parameters(vision_v2(scale=scale))
    assert ours.blocks[0].expand is None and all(b.expand is not None for b in list(ours.blocks)[1:])
    assert isinstance(ours.dropout, nn.Dropout) and MobileNetV2().dropout is None


def test_v2_torchvision_shortcut_follows_the_widths():
    """At x0.25 torchvision's first block keeps 8 -> 8 channels at stride 1, so it adds its input;
    fluid's never does for a group's first block."""
    tv = MobileNetV2(scale=0.25, variant="torchvision")
    assert tv.blocks[0].use_shortcut and not MobileNetV2(scale=0.25).blocks[0].use_shortcut
    assert sum(b.use_shortcut for b in tv.blocks) == 11
    with pytest.raises(ValueError, match="variant must be one of"):
        MobileNetV2(variant="timm")


def test_classic_v1_matches_paddle_vision_and_the_paper():
    classic = MobileNetV1(class_dim=1000, head="classic")
    assert weight_shapes(classic) == weight_shapes(vision_v1(scale=1.0))
    assert count_parameters(classic) == 4_231_976
    # The paper: 569M multiply-adds.
    assert round(count_macs(classic, 224) / 1e6) == 569


def test_demo_head_outputs_logits_and_facade_softmax():
    paddle.seed(1)
    facade = MobileNet()
    assert facade.name() == "mobile-net"
    x = paddle.randn([2, 3, 64, 64])
    probs = facade.net(x, class_dim=7, scale=0.25)
    model = facade.model
    assert isinstance(model, MobileNetV1) and model.head == "demo"
    np.testing.assert_allclose(probs.numpy().sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs.numpy(), nn.functional.softmax(model(x)).numpy(), rtol=1e-5)
    facade.net(x, class_dim=7, scale=0.25)
    assert facade.model is model  # reused, not rebuilt
    with pytest.raises(ValueError, match="built with class_dim=7, scale=0.25"):
        facade.net(x, class_dim=10, scale=0.25)


@pytest.mark.parametrize("scale", [0.25, 0.3, 0.75])
def test_seed_rounding(scale):
    model = MobileNetV1(class_dim=5, scale=scale)
    assert model.conv1.conv.weight.shape[0] == int(32 * scale)
    assert model.blocks[12].pointwise.conv.weight.shape[0] == int(1024 * scale)
    assert model.blocks[1].depthwise.conv._groups == int(64 * scale)
    assert model(paddle.randn([1, 3, 32, 32])).shape == [1, 5]


def test_registry_and_errors():
    assert sorted(MODELS) == ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
    v1 = build_model("mobilenet_v1", class_dim=3, scale=0.5, head="classic")
    assert v1.head == "classic" and v1.fc.weight.shape == [512, 3]
    v2 = build_model_from_arch({"name": "mobilenet_v2", "class_num": 4, "scale": 0.5})
    assert isinstance(v2, MobileNetV2) and v2.fc.weight.shape == [1280, 4] and v2.variant == "paddle"
    v2 = build_model_from_arch({"name": "mobilenet_v2", "class_num": 4, "variant": "torchvision"})
    assert v2.variant == "torchvision" and v2.blocks[0].expand is None
    with pytest.raises(ValueError, match="unknown model 'resnet50'; choose one of"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="head must be one of"):
        MobileNetV1(head="fancy")
    with pytest.raises(ValueError, match="scale must be > 0"):
        MobileNetV2(scale=0)


@pytest.mark.parametrize("scale, paper_macs_m, paper_params_m", [
    (1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_summary_counts_match_the_paper(scale, paper_macs_m, paper_params_m):
    """The MobileNet paper's table of width multipliers (224x224, 1000 classes)."""
    model = build_model("mobilenet_v1", class_dim=1000, scale=scale, head="classic")
    assert round(count_macs(model, 224) / 1e6) == paper_macs_m
    assert round(count_parameters(model) / 1e6, 1) == paper_params_m


def test_batchnorm_statistics_are_not_counted_as_trainable():
    model = MobileNetV1(class_dim=10, scale=0.25, head="classic")
    all_values = count_parameters(model, trainable_only=False)
    bn_stats = sum(2 * sub._mean.shape[0] for sub in model.sublayers() if isinstance(sub, nn.BatchNorm2D))
    assert all_values - count_parameters(model) == bn_stats


def test_readme_model_table_matches_the_code(repo_root):
    """Every "ours" figure in the README's model table is what the code counts."""
    import os
    import re
    builds = {
        "MobileNetV1 x0.25 (classic)": ("mobilenet_v1", {"scale": 0.25, "head": "classic"}),
        "MobileNetV1 x0.5 (classic)": ("mobilenet_v1", {"scale": 0.5, "head": "classic"}),
        "MobileNetV1 x0.75 (classic)": ("mobilenet_v1", {"scale": 0.75, "head": "classic"}),
        "MobileNetV1 x1.0 (classic)": ("mobilenet_v1", {"scale": 1.0, "head": "classic"}),
        "MobileNetV2 x1.0": ("mobilenet_v2", {"scale": 1.0}),
        "MobileNetV3 large x1.0": ("mobilenet_v3_large", {"scale": 1.0}),
        "MobileNetV3 small x1.0": ("mobilenet_v3_small", {"scale": 1.0}),
        "seed demo head x0.25": ("mobilenet_v1", {"scale": 0.25, "head": "demo"}),
        "seed demo head x1.0": ("mobilenet_v1", {"scale": 1.0, "head": "demo"}),
    }
    text = open(os.path.join(repo_root, "README.md"), encoding="utf-8").read()
    rows = {m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^\| (.+?) \| ([\d,]+) \| ([\d.]+)M \|", text, re.M)}
    assert set(rows) == set(builds)
    for label, (name, kwargs) in builds.items():
        model = build_model(name, class_dim=1000, **kwargs)
        params, macs = rows[label]
        assert int(params.replace(",", "")) == count_parameters(model), label
        assert float(macs) == round(count_macs(model, 224) / 1e6, 1), label
