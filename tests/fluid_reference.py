"""The fluid-era graphs themselves, built with paddle.static.nn (the heirs of fluid.layers).

Run in a subprocess with FLAGS_enable_pir_api=0 (the old static graph only exists there):
    python tests/fluid_reference.py SPEC.json OUT_DIR
SPEC lists the graphs to build: {"graph": "seed"|"released_v1"|"released_v2", "scale", "class_dim"}.
For each, OUT_DIR/<i>/ receives: params.json (name, shape in creation order), init.npz (the fresh
initial values), weights/ (the random "trained" weights, written by paddle.static.save_vars: one
file per variable, fluid's own writer), io.npz (input x, outputs in eval and train mode).

`seed_net` is the seed's MobileNet transliterated line by line: fluid.layers.conv2d ->
paddle.static.nn.conv2d, batch_norm -> batch_norm, pool2d(global) -> adaptive_avg_pool2d(1),
fc -> fc, MSRA() -> KaimingUniform (fluid's MSRAInitializer, uniform by default).
"""
import json
import os
import sys

import numpy as np
import paddle
from paddle import ParamAttr
from paddle.nn.initializer import KaimingUniform as MSRA

fluid_layers = paddle.static.nn


class SeedMobileNet:
    def net(self, input, class_dim=1000, scale=1.0):
        input = self.conv_bn_layer(input, filter_size=3, num_filters=int(32 * scale), stride=2,
                                   padding=1)
        input = self.depthwise_separable(input, 32, 64, 32, 1, scale)
        input = self.depthwise_separable(input, 64, 128, 64, 2, scale)
        input = self.depthwise_separable(input, 128, 128, 128, 1, scale)
        input = self.depthwise_separable(input, 128, 256, 128, 2, scale)
        input = self.depthwise_separable(input, 256, 256, 256, 1, scale)
        input = self.depthwise_separable(input, 256, 512, 256, 2, scale)
        for i in range(5):
            input = self.depthwise_separable(input, 512, 512, 512, 1, scale)
        input = self.depthwise_separable(input, 512, 1024, 512, 2, scale)
        input = self.depthwise_separable(input, 1024, 1024, 1024, 1, scale)
        input = fluid_layers.conv2d(input, num_filters=class_dim, filter_size=1, stride=1)
        pool = paddle.nn.functional.adaptive_avg_pool2d(input, 1)
        output = fluid_layers.fc(pool, size=class_dim, activation="softmax",
                                 weight_attr=ParamAttr(initializer=MSRA()))
        return output

    def conv_bn_layer(self, input, filter_size, num_filters, stride, padding, num_groups=1,
                      act="relu", use_cudnn=True):
        conv = fluid_layers.conv2d(input=input, num_filters=num_filters, filter_size=filter_size,
                                   stride=stride, padding=padding, groups=num_groups, act=None,
                                   use_cudnn=use_cudnn, param_attr=ParamAttr(initializer=MSRA()),
                                   bias_attr=False)
        return fluid_layers.batch_norm(input=conv, act=act)

    def depthwise_separable(self, input, num_filters1, num_filters2, num_groups, stride, scale):
        depthwise_conv = self.conv_bn_layer(input=input, filter_size=3,
                                            num_filters=int(num_filters1 * scale), stride=stride,
                                            padding=1, num_groups=int(num_groups * scale))
        return self.conv_bn_layer(input=depthwise_conv, filter_size=1,
                                  num_filters=int(num_filters2 * scale), stride=1, padding=0)


def named_conv_bn(input, filter_size, num_filters, stride, padding, num_groups=1, act="relu",
                  name=None):
    """conv_bn_layer of the released fluid models, with ParamAttr names."""
    conv = fluid_layers.conv2d(input=input, num_filters=num_filters, filter_size=filter_size,
                               stride=stride, padding=padding, groups=num_groups, act=None,
                               param_attr=ParamAttr(initializer=MSRA(), name=name + "_weights"),
                               bias_attr=False)
    bn = name + "_bn"
    return fluid_layers.batch_norm(input=conv, act=act,
                                   param_attr=ParamAttr(name=bn + "_scale"),
                                   bias_attr=ParamAttr(name=bn + "_offset"),
                                   moving_mean_name=bn + "_mean",
                                   moving_variance_name=bn + "_variance")


def released_v1_net(input, class_dim, scale):
    """The released fluid MobileNetV1 (PaddleCV image_classification): classic head."""
    x = named_conv_bn(input, 3, int(32 * scale), 2, 1, name="conv1")
    blocks = [("conv2_1", 32, 64, 32, 1), ("conv2_2", 64, 128, 64, 2),
              ("conv3_1", 128, 128, 128, 1), ("conv3_2", 128, 256, 128, 2),
              ("conv4_1", 256, 256, 256, 1), ("conv4_2", 256, 512, 256, 2)]
    blocks += [(f"conv5_{i}", 512, 512, 512, 1) for i in range(1, 6)]
    blocks += [("conv5_6", 512, 1024, 512, 2), ("conv6", 1024, 1024, 1024, 1)]
    for name, f1, f2, groups, stride in blocks:
        x = named_conv_bn(x, 3, int(f1 * scale), stride, 1, int(groups * scale), name=name + "_dw")
        x = named_conv_bn(x, 1, int(f2 * scale), 1, 0, name=name + "_sep")
    x = paddle.nn.functional.adaptive_avg_pool2d(x, 1)
    return fluid_layers.fc(x, size=class_dim,
                           weight_attr=ParamAttr(initializer=MSRA(), name="fc7_weights"),
                           bias_attr=ParamAttr(name="fc7_offset"))


def released_v2_net(input, class_dim, scale):
    """The released fluid MobileNetV2: every unit has its 1x1 expansion, relu6, linear output."""
    def unit(x, in_c, out_c, shortcut, stride, t, name):
        hidden = int(round(in_c * t))
        y = named_conv_bn(x, 1, hidden, 1, 0, act="relu6", name=name + "_expand")
        y = named_conv_bn(y, 3, hidden, stride, 1, hidden, act="relu6", name=name + "_dwise")
        y = named_conv_bn(y, 1, out_c, 1, 0, act=None, name=name + "_linear")
        return x + y if shortcut else y

    x = named_conv_bn(input, 3, int(32 * scale), 2, 1, act="relu6", name="conv1_1")
    in_c = int(32 * scale)
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    for group, (t, c, n, s) in enumerate(settings, start=2):
        c = int(c * scale)
        x = unit(x, in_c, c, False, s, t, f"conv{group}_1")
        for k in range(1, n):
            x = unit(x, c, c, True, 1, t, f"conv{group}_{k + 1}")
        in_c = c
    x = named_conv_bn(x, 1, int(1280 * scale) if scale > 1.0 else 1280, 1, 0, act="relu6",
                      name="conv9")
    x = paddle.nn.functional.adaptive_avg_pool2d(x, 1)
    return fluid_layers.fc(x, size=class_dim, weight_attr=ParamAttr(name="fc10_weights"),
                           bias_attr=ParamAttr(name="fc10_offset"))


def trained_like(name, value, rng):
    """Random weights far from the initial ones, so outputs are not a near-uniform softmax."""
    is_bn = name.startswith("batch_norm")
    if name.endswith("_variance") or (is_bn and name.endswith(".w_2")):
        return rng.uniform(0.5, 2.0, value.shape)
    if name.endswith("_mean") or (is_bn and name.endswith(".w_1")):
        return rng.normal(0.0, 0.2, value.shape)
    if name.endswith("_scale") or (is_bn and name.endswith(".w_0")):
        return rng.uniform(0.5, 1.5, value.shape)
    if name.endswith(("_offset", ".b_0")):
        return rng.normal(0.0, 0.1, value.shape)
    fan_in = int(np.prod(value.shape[1:])) if value.ndim == 4 else value.shape[0]
    return rng.normal(0.0, (2.0 / fan_in) ** 0.5, value.shape) * (3.0 if value.ndim == 2 else 1.0)


def build_one(spec, out_dir, rng):
    graph, scale, class_dim = spec["graph"], spec["scale"], spec["class_dim"]
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [None, 3, 224, 224], "float32")
        if graph == "seed":
            output = SeedMobileNet().net(image, class_dim=class_dim, scale=scale)
        elif graph == "released_v1":
            output = released_v1_net(image, class_dim, scale)
        else:
            output = released_v2_net(image, class_dim, scale)
    test_program = main.clone(for_test=True)
    # The logits: the softmax op's input for the seed (its fc has act='softmax').
    logits_name = output.name
    for op in main.global_block().ops:
        if op.type == "softmax":
            logits_name = op.input("X")[0]
    params = main.global_block().all_parameters()
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.global_scope()
    exe.run(startup)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump([[p.name, list(p.shape)] for p in params], f)
    np.savez(os.path.join(out_dir, "init.npz"),
             **{p.name: np.array(scope.find_var(p.name).get_tensor()) for p in params})
    for p in params:
        tensor = scope.find_var(p.name).get_tensor()
        value = np.array(tensor)
        tensor.set(trained_like(p.name, value, rng).astype("float32"), paddle.CPUPlace())
    paddle.static.save_vars(exe, os.path.join(out_dir, "weights"), main, vars=params)
    x = rng.uniform(-1, 1, (3, 3, 224, 224)).astype("float32")
    eval_out = exe.run(test_program, feed={"image": x}, fetch_list=[output.name, logits_name])
    # The main program runs batch norm on batch statistics, as a layer in train mode does.
    train_out = exe.run(main, feed={"image": x}, fetch_list=[output.name, logits_name])
    np.savez(os.path.join(out_dir, "io.npz"), x=x, eval_out=eval_out[0], eval_logits=eval_out[1],
             train_out=train_out[0], train_logits=train_out[1])


def main():
    assert os.environ.get("FLAGS_enable_pir_api") == "0", "run with FLAGS_enable_pir_api=0"
    paddle.enable_static()
    with open(sys.argv[1]) as f:
        specs = json.load(f)
    rng = np.random.default_rng(0)
    for i, spec in enumerate(specs):
        build_one(spec, os.path.join(sys.argv[2], str(i)), rng)


if __name__ == "__main__":
    main()
