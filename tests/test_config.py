"""ppmobilenet.config: the schema, its error messages, -o overrides, dump/load round trip."""
import argparse
import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from ppmobilenet.cli.common import add_config_args
from ppmobilenet.config import (SCHEMA, ConfigError, dump_config, load_config, parse_overrides,
                                schema_keys)

MINIMAL = """\
Global:
  epochs: 2
Arch:
  name: mobilenet_v1
  class_num: 10
"""


def write(tmp_path, text, name="x.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_minimal_config_gets_every_default(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg["Global"]["epochs"] == 2
    assert cfg["Global"]["output_dir"] == "output"
    assert cfg["Global"]["save_inference_dir"] == os.path.join("output", "inference")
    assert cfg["Global"]["image_shape"] == [3, 224, 224]
    assert cfg["Arch"] == {"name": "mobilenet_v1", "class_num": 10, "scale": 1.0, "head": "demo",
                           "variant": "paddle"}
    assert cfg["DataLoader"]["Train"]["sampler"]["shuffle"] is True
    assert cfg["DataLoader"]["Eval"]["sampler"]["shuffle"] is False
    assert cfg["DataLoader"]["Train"]["transforms"][0] == {"RandomResizedCrop": {"size": 64, "scale": [0.6, 1.0]}}
    assert cfg["Optimizer"]["regularizer"]["coeff"] == pytest.approx(4e-5)
    # every schema key is present in the result
    for dotted in schema_keys():
        node = cfg
        for part in dotted.split("."):
            node = node[part]
    # the defaults are copies: changing one result leaves the next load untouched
    cfg["DataLoader"]["Train"]["transforms"].clear()
    assert load_config(write(tmp_path, MINIMAL))["DataLoader"]["Train"]["transforms"]


def test_unknown_key_names_file_line_and_closest_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("  epochs: 2\n", "  epochs: 2\n  epoch: 3\n"))
    msg = error_of(path)
    assert msg == f"unknown key 'Global.epoch' in {path}:3; did you mean 'Global.epochs'?"


def test_unknown_key_suggests_a_key_of_another_section(tmp_path):
    path = write(tmp_path, MINIMAL + "Optimizer:\n  learning_rate: 0.1\n")
    msg = error_of(path)
    assert "unknown key 'Optimizer.learning_rate'" in msg
    assert "did you mean 'Optimizer.lr.learning_rate'?" in msg


def test_unknown_section(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL + "Optimiser:\n  name: Momentum\n"))
    assert "unknown key 'Optimiser'" in msg and "did you mean 'Optimizer'?" in msg


def test_wrong_type_names_key_expected_type_and_value(tmp_path):
    path = write(tmp_path, MINIMAL.replace("epochs: 2", "epochs: ten"))
    assert error_of(path) == f"Global.epochs in {path}:2: expected int, got 'ten' (str)"


@pytest.mark.parametrize("line, key, expected", [
    ("  use_visualdl: 1\n", "Global.use_visualdl", "expected bool"),
    ("  image_shape: [3, 64]\n", "Global.image_shape", "must have 3 items"),
    ("  image_shape: 64\n", "Global.image_shape", "expected list of int"),
    ("  device: tpu\n", "Global.device", "expected one of 'auto', 'cpu', 'gpu', got 'tpu'"),
    ("  print_batch_step: 0\n", "Global.print_batch_step", "must be in [1, 2147483647], got 0"),
])
def test_bad_values(tmp_path, line, key, expected):
    msg = error_of(write(tmp_path, MINIMAL.replace("  epochs: 2\n", "  epochs: 2\n" + line)))
    assert msg.startswith(key) and expected in msg


def test_allowed_value_with_suggestion(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL.replace("mobilenet_v1", "mobilenet_v3")))
    assert "Arch.name" in msg and "got 'mobilenet_v3'" in msg and "did you mean" in msg


def test_float_keys_take_ints_and_yaml11_exponent_strings(tmp_path):
    # PyYAML reads 4e-5 (no dot) as a string; a float key still takes it
    text = MINIMAL + "Optimizer:\n  regularizer:\n    coeff: 4e-5\n  lr:\n    learning_rate: 1\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg["Optimizer"]["regularizer"]["coeff"] == pytest.approx(4e-5)
    assert isinstance(cfg["Optimizer"]["lr"]["learning_rate"], float)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("  class_num: 10\n", ""))
    msg = error_of(path)
    assert msg.startswith("missing required key 'Arch.class_num' in ") and path in msg


def test_missing_required_section(tmp_path):
    msg = error_of(write(tmp_path, "Arch: {name: mobilenet_v2, class_num: 3}\nMetric: {topk: [1]}\n"))
    assert "missing required key 'Global.epochs'" in msg


def test_several_problems_reported_together(tmp_path):
    msg = error_of(write(tmp_path, "Global: {epochs: x, foo: 1}\nArch: {name: mobilenet_v1}\n"))
    assert msg.startswith("3 problems")
    assert "Global.epochs" in msg and "'Global.foo'" in msg and "'Arch.class_num'" in msg


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "Global:\n  epochs: 2\n  seed: [1, 2\nArch:\n  name: x\n")
    msg = error_of(path)
    assert msg.startswith(f"invalid YAML in {path}:")
    line = int(re.search(re.escape(path) + r":(\d+)", msg).group(1))
    assert 3 <= line <= 4


def test_yaml_bad_indentation(tmp_path):
    path = write(tmp_path, "Global:\n  epochs: 2\n   seed: 1\n")
    assert f"invalid YAML in {path}:3" in error_of(path)


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, MINIMAL + "Global:\n  seed: 1\n")
    assert error_of(path) == f"duplicate key 'Global' in {path}:6"


def test_top_level_must_be_a_mapping(tmp_path):
    assert "top level must be a mapping" in error_of(write(tmp_path, "- 1\n- 2\n"))


def test_missing_file():
    assert error_of("/nonexistent/x.yaml") == "config file not found: /nonexistent/x.yaml"


def test_empty_section_means_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "AMP:\nEMA:\n"))
    assert cfg["AMP"]["use_amp"] is False and cfg["EMA"]["decay"] == 0.9999


# ------------------------------------------------------------------ overrides

def test_parse_overrides_values():
    parsed = {".".join(map(str, p)): v for p, v, _ in parse_overrides([
        "Global.epochs=3", "Optimizer.lr.learning_rate=0.1", "Metric.topk=[1, 5]", "Global.use_visualdl=false",
        "Global.checkpoints=null", "Global.pretrained_model=None", "Global.output_dir=out/x",
        "Optimizer.regularizer.coeff=1e-5", "Global.image_shape=(3, 32, 32)", "A.b.0.c=x=y"])}
    assert parsed == {"Global.epochs": 3, "Optimizer.lr.learning_rate": 0.1, "Metric.topk": [1, 5],
                      "Global.use_visualdl": False, "Global.checkpoints": None, "Global.pretrained_model": None,
                      "Global.output_dir": "out/x", "Optimizer.regularizer.coeff": 1e-5,
                      "Global.image_shape": [3, 32, 32], "A.b.0.c": "x=y"}
    assert parse_overrides(["A.b.0.c=1"])[0][0] == ("A", "b", 0, "c")


@pytest.mark.parametrize("bad", ["Global.epochs", "=3", "Global..epochs=3", ".x=1"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="expected Section.key=value"):
        parse_overrides([bad])


def test_overrides_apply_before_validation(tmp_path):
    path = write(tmp_path, MINIMAL.replace("  class_num: 10\n", ""))
    cfg = load_config(path, ["Arch.class_num=102", "Global.epochs=5", "AMP.use_amp=true",
                             "Optimizer.lr.name=Piecewise", "Optimizer.lr.decay_epochs=[1, 2]",
                             "Optimizer.lr.values=[0.1, 0.01, 0.001]", "Global.seed=null"])
    assert cfg["Arch"]["class_num"] == 102 and cfg["Global"]["epochs"] == 5
    assert cfg["AMP"]["use_amp"] is True and cfg["Global"]["seed"] is None
    assert cfg["Optimizer"]["lr"]["decay_epochs"] == [1, 2]


def test_override_unknown_key_names_the_option(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL), ["Global.epoh=3"])
    assert msg == "unknown key 'Global.epoh' in -o Global.epoh=3; did you mean 'Global.epochs'?"


def test_override_wrong_type_names_the_option(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL), ["Global.epochs=abc"])
    assert msg == "Global.epochs in -o Global.epochs=abc: expected int, got 'abc' (str)"


def test_list_index_overrides(tmp_path):
    path = write(tmp_path, MINIMAL)
    # transforms come from the defaults here: the path still reaches into them
    cfg = load_config(path, ["DataLoader.Train.transforms.0.RandomResizedCrop.size=32",
                             "Global.image_shape.1=32", "Global.image_shape.2=32",
                             "DataLoader.Eval.transforms.1={CenterCrop: {size: 48}}"])
    assert cfg["DataLoader"]["Train"]["transforms"][0] == {"RandomResizedCrop": {"size": 32, "scale": [0.6, 1.0]}}
    assert cfg["Global"]["image_shape"] == [3, 32, 32]
    assert cfg["DataLoader"]["Eval"]["transforms"][1] == {"CenterCrop": {"size": 48}}


def test_list_index_out_of_range(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL), ["Global.image_shape.3=1"])
    assert msg == "index 3 out of range for Global.image_shape (length 3) in -o Global.image_shape.3=1"


def test_override_into_a_missing_transform_name(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL), ["DataLoader.Train.transforms.0.Resize.size=32"])
    assert "no key 'Resize' in DataLoader.Train.transforms[0]" in msg and "RandomResizedCrop" in msg


def test_override_bad_transform_kwarg_names_op_path_and_option(tmp_path):
    msg = error_of(write(tmp_path, MINIMAL), ["DataLoader.Train.transforms.0.RandomResizedCrop.sise=32"])
    assert msg.startswith("DataLoader.Train.transforms[0].RandomResizedCrop in -o "
                          "DataLoader.Train.transforms.0.RandomResizedCrop.sise=32: bad arguments")
    assert "'sise'" in msg


# ------------------------------------------------------------------ transforms

def test_transform_errors_name_the_config_path(tmp_path):
    text = MINIMAL + textwrap.dedent("""\
        DataLoader:
          Train:
            transforms:
              - RandomResizedCrop: {size: 64, scal: [0.6, 1.0]}
              - RandomHorizontalFlp: {}
              - {ToTensor: {}, Normalize: {}}
              - Resize: {size: abc}
              - Compose: {transforms: []}
        """)
    path = write(tmp_path, text)
    msg = error_of(path)
    assert msg.startswith("5 problems")
    assert f"DataLoader.Train.transforms[0].RandomResizedCrop in {path}:9: bad arguments" in msg
    assert "unexpected keyword argument 'scal'" in msg and "accepts: size, scale, ratio" in msg
    assert f"DataLoader.Train.transforms[1] in {path}:10: unknown transform 'RandomHorizontalFlp'" in msg
    assert "did you mean 'RandomHorizontalFlip'?" in msg
    assert f"DataLoader.Train.transforms[2] in {path}:11: each transform must be a single-key mapping" in msg
    assert "DataLoader.Train.transforms[3].Resize" in msg      # the constructor rejects size 'abc'
    assert "DataLoader.Train.transforms[4]" in msg and "Compose is implied" in msg


def test_transform_null_kwargs_and_infer_transforms(tmp_path):
    text = MINIMAL + "Infer:\n  transforms:\n    - Resize: {size: 72}\n    - ToTensor:\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg["Infer"]["transforms"] == [{"Resize": {"size": 72}}, {"ToTensor": {}}]
    assert load_config(write(tmp_path, MINIMAL))["Infer"]["transforms"] is None


# ------------------------------------------------------------------ cross-key rules

def test_imagenet_dataset_needs_its_paths(tmp_path):
    text = MINIMAL + "DataLoader:\n  Train:\n    dataset: {name: ImageNetDataset, image_root: data}\n" \
                     "  Eval:\n    dataset: {name: ImageFolder, image_root: data/val}\n"
    msg = error_of(write(tmp_path, text))
    assert "DataLoader.Train.dataset.cls_label_path is required when DataLoader.Train.dataset.name is " \
           "ImageNetDataset" in msg


def test_missing_eval_section_with_real_train_data(tmp_path):
    text = MINIMAL + "DataLoader:\n  Train:\n    dataset: {name: ImageFolder, image_root: data}\n"
    path = write(tmp_path, text)
    assert "DataLoader.Eval is missing" in error_of(path)
    assert load_config(path, ["Global.eval_during_train=false"])["DataLoader"]["Eval"]["dataset"]["name"] \
        == "DemoDigits"


def test_piecewise_values_length_and_topk(tmp_path):
    path = write(tmp_path, MINIMAL)
    msg = error_of(path, ["Optimizer.lr.name=Piecewise", "Optimizer.lr.values=[0.1]"])
    assert "Optimizer.lr.values needs len(decay_epochs) + 1 = 4 items" in msg
    msg = error_of(path, ["Arch.class_num=3", "Metric.topk=[1, 5]"])
    assert msg == "Metric.topk in -o Metric.topk=[1, 5]: top-k 5 exceeds Arch.class_num 3"
    # defaults the file never wrote shrink to fit a small class_num instead
    cfg = load_config(path, ["Arch.class_num=3"])
    assert cfg["Metric"]["topk"] == [1] and cfg["Infer"]["topk"] == 3


def test_lr_schedule_rules(tmp_path):
    path = write(tmp_path, MINIMAL)
    msg = error_of(path, ["Optimizer.lr.name=Piecewise", "Optimizer.lr.decay_epochs=[60, 30, 90]"])
    assert msg == ("Optimizer.lr.decay_epochs must increase, got [60, 30, 90] "
                   "(in -o Optimizer.lr.decay_epochs=[60, 30, 90])")
    load_config(path, ["Optimizer.lr.decay_epochs=[60, 30, 90]"])      # Cosine ignores them
    msg = error_of(path, ["Optimizer.lr.warmup_epoch=2"])
    assert msg == ("Optimizer.lr.warmup_epoch=2 covers the whole run (Global.epochs=2) "
                   "(in -o Optimizer.lr.warmup_epoch=2)")
    assert load_config(path, ["Optimizer.lr.warmup_epoch=1"])["Optimizer"]["lr"]["warmup_epoch"] == 1


def test_arch_names_and_variants(tmp_path):
    path = write(tmp_path, MINIMAL)
    for name in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"):
        for variant in ("paddle", "torchvision"):
            arch = load_config(path, [f"Arch.name={name}", f"Arch.variant={variant}"])["Arch"]
            assert (arch["name"], arch["variant"]) == (name, variant)
    assert error_of(path, ["Arch.variant=timm"]) == ("Arch.variant in -o Arch.variant=timm: expected one of "
                                                     "'paddle', 'torchvision', got 'timm'")
    assert "did you mean 'mobilenet_v3_small'" in error_of(path, ["Arch.name=mobilenet_v3_smal"])


def test_yaml_values_and_lines_come_from_one_read(tmp_path):
    """One composed node tree gives both: anchors and aliases resolve, lines stay right."""
    path = write(tmp_path, MINIMAL + "EMA:\n  use_ema: &on true\n  decay: 0.99\nAMP:\n  use_amp: *on\n  levl: O1\n")
    msg = error_of(path)
    assert msg == f"unknown key 'AMP.levl' in {path}:11; did you mean 'AMP.level'?"
    cfg = load_config(write(tmp_path, MINIMAL + "EMA:\n  use_ema: &on true\nAMP:\n  use_amp: *on\n", "y.yaml"))
    assert cfg["EMA"]["use_ema"] is True and cfg["AMP"]["use_amp"] is True


# ------------------------------------------------------------------ dump, CLI, docs

def test_dump_config_round_trip_atomic(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), ["Global.seed=7", "DataLoader.Train.sampler.batch_size=8"])
    out = tmp_path / "run" / "config.yaml"
    dump_config(cfg, str(out))
    assert os.listdir(out.parent) == ["config.yaml"]          # no temp file left behind
    assert load_config(str(out)) == cfg
    assert yaml.safe_load(out.read_text())["Global"]["seed"] == 7


def test_add_config_args():
    parser = add_config_args(argparse.ArgumentParser())
    args = parser.parse_args(["-c", "x.yaml", "-o", "A.b=1", "-o", "C.d=2", "E.f=3"])
    assert args.config == "x.yaml" and args.override == ["A.b=1", "C.d=2", "E.f=3"]
    assert parser.parse_args(["--config", "y.yaml"]).override is None
    with pytest.raises(SystemExit):
        parser.parse_args(["-o", "A.b=1"])


@pytest.mark.parametrize("extra,code,out", [([], 0, "class_num: 10"),
                                            (["-o", "Arch.scale=wide"], 2, "config error: Arch.scale in -o")])
def test_python_m_config_prints_it_resolved(tmp_path, repo_root, extra, code, out):
    r = subprocess.run([sys.executable, "-m", "ppmobilenet.config", "-c", write(tmp_path, MINIMAL), *extra],
                       capture_output=True, text=True, cwd=repo_root, timeout=120)
    assert r.returncode == code, r.stderr[-2000:]
    assert out in (r.stdout if code == 0 else r.stderr)
    if code == 0:
        assert yaml.safe_load(r.stdout)["Arch"]["variant"] == "paddle"
    assert "Traceback" not in r.stderr


def test_load_config_accepts_none_overrides(tmp_path):
    assert load_config(write(tmp_path, MINIMAL), None)["Global"]["epochs"] == 2


def test_docs_mention_every_key(repo_root):
    with open(os.path.join(repo_root, "docs", "configs.md"), encoding="utf-8") as f:
        doc = f.read()
    missing = [k for k in schema_keys() if f"`{k}`" not in doc]
    assert not missing, f"docs/configs.md does not document {missing}"
    assert set(SCHEMA) == {"Global", "AMP", "Arch", "Loss", "Optimizer", "EMA", "DataLoader", "Metric", "Infer",
                           "Export"}
