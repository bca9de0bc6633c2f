"""Bounds: every numeric key of the schema has a range, so every value the schema accepts works
(the edges are built and run here) and every other is a config error naming the key (exit 2,
no traceback); a loss that turns nan or inf stops the run at that step, keeping what was saved
before it."""
import math

import numpy as np
import paddle
import pytest

from engine_helpers import (TRAIN, error_line, ok, run_tool, tiny_config)
from ppmobilenet.config import (MAX_CLASSES, MAX_SEED, MIN_SIDE, SCHEMA, ConfigError, Key,
                                validate_config)
from ppmobilenet.engine import train_one_epoch
from ppmobilenet.engine.checkpoint import load_checkpoint, read_states, save_checkpoint
from ppmobilenet.engine.optim import build_lr_scheduler, build_optimizer
from ppmobilenet.engine.runtime import seed_everything
from ppmobilenet.engine.trainer import NonFiniteLoss, build_loss
from ppmobilenet.models import build_model, build_model_from_arch

MINIMAL = {"Global": {"epochs": 2}, "Arch": {"name": "mobilenet_v1", "class_num": 10}}


def numeric_keys(schema=SCHEMA, prefix=()):
    """(path, Key) of every key whose value is a number or a list of numbers."""
    for name, spec in schema.items():
        if isinstance(spec, dict):
            yield from numeric_keys(spec, prefix + (name,))
        elif isinstance(spec, Key) and {"int", "float", "list[int]", "list[float]"} & set(spec.types):
            yield prefix + (name,), spec


NUMERIC = list(numeric_keys())


def with_value(path, value):
    raw = {"Global": dict(MINIMAL["Global"]), "Arch": dict(MINIMAL["Arch"])}
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


def refused(path, value):
    with pytest.raises(ConfigError) as e:
        validate_config(with_value(path, value))
    assert ".".join(path) in str(e.value), str(e.value)
    return str(e.value)


def as_list(spec, x):
    if spec.types[0].startswith("list["):
        return [3, x, x] if spec is SCHEMA["Global"]["image_shape"] else [x]
    return x


@pytest.mark.parametrize("path, spec", NUMERIC, ids=[".".join(p) for p, _ in NUMERIC])
def test_every_numeric_key_has_a_range(path, spec):
    """Too large, negative, and (for floats) inf and nan: each refused, naming the key."""
    assert len(NUMERIC) >= 25
    refused(path, as_list(spec, 10 ** 40))
    refused(path, as_list(spec, -1))
    if any("float" in t for t in spec.types):
        for bad in (math.inf, -math.inf, math.nan, "nan", "inf"):  # "nan": a string float() reads
            assert "must be a finite number" in refused(path, as_list(spec, bad))


@pytest.mark.parametrize("override, key, words", [
    ("Optimizer.lr.learning_rate=.inf", "Optimizer.lr.learning_rate", "finite"),
    ("Optimizer.momentum=.inf", "Optimizer.momentum", "finite"),
    ("Optimizer.regularizer.coeff=nan", "Optimizer.regularizer.coeff", "finite"),
    ("Global.seed=-1", "Global.seed", "[0, 4294967295]"),
    ("Global.seed=18446744073709551616", "Global.seed", "[0, 4294967295]"),
    ("Global.epochs=100000000000000000000000000", "Global.epochs", "[1, 100000]"),
    ("Arch.scale=1e-9", "Arch.scale", "1/32"),
    ("Arch.class_num=100000000000", "Arch.class_num", "[1, 100000]"),
])
def test_nonsense_is_a_config_error_through_the_cli(tmp_path, data, override, key, words):
    cfg = tiny_config(tmp_path / "c.yaml", tmp_path / "run", data, epochs=1)
    r = run_tool(TRAIN, cfg, override)
    line = error_line(r)
    assert r.returncode == 2 and line.startswith(f"config error: {key} in -o {override}") and words in line, line
    assert not (tmp_path / "run" / "latest.pdparams").exists()


def test_an_output_dir_that_is_a_file_is_a_config_error(tmp_path, data):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    cfg = tiny_config(tmp_path / "c.yaml", blocker, data, epochs=1)
    r = run_tool(TRAIN, cfg)
    line = error_line(r)
    assert r.returncode == 2 and f"Global.output_dir={blocker} is a file" in line, line
    assert blocker.read_text() == "mine\n"


def test_the_edges_the_schema_accepts_work():
    """Arch.scale's computed floors build and run; the largest class count and seed work."""
    x = paddle.rand([2, 3, MIN_SIDE, MIN_SIDE])
    for arch in ({"name": "mobilenet_v1", "scale": 1 / 32, "head": "classic"},
                 {"name": "mobilenet_v1", "scale": 1 / 32, "head": "demo"},
                 {"name": "mobilenet_v2", "scale": 1 / 16, "variant": "paddle"},
                 {"name": "mobilenet_v2", "scale": 1e-9, "variant": "torchvision"},
                 {"name": "mobilenet_v3_small", "scale": 1e-9, "variant": "paddle"}):
        cfg = validate_config({"Global": {"epochs": 1}, "Arch": {**arch, "class_num": 3}})
        model = build_model_from_arch(cfg["Arch"])
        model.eval()
        assert model(x).shape == [2, 3], arch
    for name, floor in (("mobilenet_v1", 1 / 32), ("mobilenet_v2", 1 / 16)):  # just below: refused
        with pytest.raises(ConfigError, match="Arch.scale"):
            validate_config({"Global": {"epochs": 1}, "Arch": {"name": name, "class_num": 3, "scale": floor * 0.99}})
    big = build_model("mobilenet_v1", class_dim=MAX_CLASSES, scale=0.25, head="classic")
    assert big.fc.weight.shape == [256, MAX_CLASSES]
    draws = []
    for seed in (0, MAX_SEED):
        seed_everything(validate_config(with_value(("Global", "seed"), seed))["Global"]["seed"])
        draws.append(paddle.rand([4]).numpy())
    assert not np.array_equal(*draws)  # the largest seed is a seed of its own, not an alias of 0
    sched = build_lr_scheduler(validate_config(with_value(("Global", "epochs"), 100_000))["Optimizer"]["lr"],
                               epochs=100_000, steps_per_epoch=10_000)
    assert 0 < sched() <= 0.1


def test_train_one_epoch_stops_at_the_first_non_finite_loss():
    """The loop raises at the bad batch, before on_batch: nothing after it is reported."""
    seed_everything(0)
    model = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    cfg = validate_config(MINIMAL)
    sched = build_lr_scheduler(cfg["Optimizer"]["lr"], epochs=1, steps_per_epoch=4)
    opt = build_optimizer(cfg["Optimizer"], model.parameters(), sched)
    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.normal(size=(4, 3, 32, 32)).astype("float32")),
                paddle.to_tensor(rng.integers(0, 10, size=(4, 1)))) for _ in range(4)]
    ce, calls = build_loss({"epsilon": 0.0}), []

    def loss_fn(logits, labels):  # the third batch's loss overflows
        calls.append(1)
        return ce(logits, labels) * (math.inf if len(calls) == 3 else 1.0)

    seen = []
    with pytest.raises(NonFiniteLoss) as e:
        train_one_epoch(model, batches, loss_fn, opt, sched, on_batch=lambda images, stats: seen.append(stats))
    assert e.value.batch == 3 and not math.isfinite(e.value.loss)
    assert len(seen) == 2 and all(math.isfinite(s.loss) for s in seen)


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_and_keeps_the_checkpoints(tmp_path, data):
    """Epoch 1 trains; a set whose classifier bias holds a nan (so the very next loss is nan) is
    resumed: the run stops at epoch 2, step 7 with exit 1, and no file of the folder changes."""
    out = tmp_path / "run"
    cfg = tiny_config(tmp_path / "c.yaml", out, data, epochs=1)
    ok(run_tool(TRAIN, cfg))
    model = build_model("mobilenet_v1", class_dim=10, scale=0.25, head="classic")
    states = load_checkpoint(out / "latest", model)
    weights = model.state_dict()
    bias = weights["fc.bias"].numpy()
    bias[0] = np.nan
    weights["fc.bias"] = paddle.to_tensor(bias)
    opt = paddle.load(str(out / "latest.pdopt"))
    save_checkpoint(out / "poisoned", weights, opt, {k: v for k, v in states.items() if k != "files"})
    before = {p.name: p.read_bytes() for p in out.glob("*.pd*")}

    r = run_tool(TRAIN, cfg, f"Global.checkpoints={out / 'poisoned'}", "Global.epochs=2")
    line = error_line(r)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "epoch 2, step 7 (batch 1 of 6): the training loss is nan" in line, line
    assert f"kept (the last: {out / 'poisoned'}, at step 6)" in line, line
    assert {p.name: p.read_bytes() for p in out.glob("*.pd*")} == before  # nothing saved after it
    assert read_states(out / "latest")["global_step"] == 6
