"""YAML config + `-o` overrides -> one validated dict of plain Python values.

A command does (ppmobilenet/cli/)::

    add_config_args(parser)                  # -c/--config, -o/--override (cli/common.py)
    args = parser.parse_args()
    cfg = load_config(args.config, args.override)

The whole schema is the one table `SCHEMA` below: a section is a dict, a leaf is a `Key`
(types, default, required, allowed values, extra check, one-line doc). To add a key, add one
line to the table (and a line to docs/configs.md; a test checks that every key is documented).
The result has every key of the table, checked: code downstream indexes it directly
(`cfg["Global"]["epochs"]`) and neither restates a default nor checks a value again.

Errors are `ConfigError` (a ValueError) and name the place at fault: the YAML file and line,
or the `-o` option that set the value.
"""
import ast
import copy
import difflib
import math
import os
import re

import yaml

from .data.transforms import TransformSpecError, check_transform
from .errors import PPMobileNetError, short_repr
from .io import atomic_write_text

__all__ = ["ConfigError", "Key", "SCHEMA", "load_config", "parse_overrides", "dump_config",
           "validate_config", "schema_keys"]


class ConfigError(ValueError, PPMobileNetError):
    """A config file or -o option is wrong; the message names the file:line or option."""
    exit_status = 2
    title = "config error"


class Key:
    """One leaf of the schema.

    types: tuple of type names: "int", "float", "bool", "str", "null", "list[int]",
    "list[float]", "list[str]", "transforms" (a paddle.vision.transforms list).
    allowed: the values a str (or each item of a list[str]) may take.
    check: optional fn(value) -> error text or None, for ranges and lengths.
    """
    __slots__ = ("types", "default", "required", "allowed", "check", "doc")

    def __init__(self, types, default=None, required=False, allowed=None, check=None, doc=""):
        self.types = (types,) if isinstance(types, str) else tuple(types)
        self.default = default
        self.required = required
        self.allowed = tuple(allowed) if allowed else None
        self.check = check
        self.doc = doc


def _values(v):
    return v if isinstance(v, list) else [v]


def _at_least(n):
    return lambda v: None if v is None or all(x >= n for x in _values(v)) else f"must be >= {n}"


def _in(lo, hi, lo_open=False, hi_open=False):
    """A range check for a number or each item of a list: [lo, hi], ( or ) where open."""
    text = f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v):
        inside = all((x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
                     for x in _values(v))
        return None if v is None or inside else text
    return check


def _length(n):
    return lambda v: None if v is None or len(v) == n else f"must have {n} items"


def _image_shape(v):
    """C, H, W: the models take RGB (3 channels); the sides are bounded so an export or a
    benchmark at that size fits in memory."""
    if len(v) != 3:
        return "must have 3 items"
    if v[0] != 3:
        return "must start with 3 (the models take RGB images)"
    if _in(MIN_SIDE, MAX_SIDE)(v[1:]):
        return f"H and W must be in [{MIN_SIDE}, {MAX_SIDE}]"
    return None


# Upper bounds of the numeric keys. Every value the schema accepts must work, so each number has
# a range: the lower end where smaller values mean nothing, the upper end far above any real run
# but below what would overflow, exhaust memory or never end.
MAX_EPOCHS = 100_000            # 120-360 epochs are the ImageNet recipes
MAX_COUNT = 2 ** 31 - 1         # step counters and intervals: fit a C int
MAX_SEED = 2 ** 32 - 1          # paddle.seed uses 32 bits: 2**32 gives the draws of 0
MAX_CLASSES = 100_000           # the fc of MobileNetV1 x1.0 at this size holds 102M weights
MAX_SCALE = 4.0                 # published widths go up to 2.0 (MobileNetV2)
MAX_LR = 10.0                   # SGD rates beyond this diverge on any of these networks
MAX_BATCH = 8192                # per card
MAX_LOSS_SCALE = 3.4028234663852886e38  # float32's largest: the AMP scaler holds it in float32
MAX_WORKERS = 64
MIN_SIDE, MAX_SIDE = 8, 4096    # image sides of Global.image_shape
# Arch.scale's lower end where a width is int(c * scale): the narrowest layer (c) must keep at
# least one channel. make_divisible widths (MobileNetV2 torchvision, V3) never drop below 8.
MIN_SCALE_WIDTH = {("mobilenet_v1", None): 32, ("mobilenet_v2", "paddle"): 16}


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _loader_schema(train):
    """DataLoader.Train and DataLoader.Eval share these keys; only some defaults differ."""
    if train:
        transforms = [{"RandomResizedCrop": {"size": 64, "scale": [0.6, 1.0]}}]
    else:
        transforms = [{"Resize": {"size": 64}}, {"CenterCrop": {"size": 64}}]
    # Normalize in numpy (HWC, 0-255) + Transpose equals ToTensor + Normalize, without running
    # Paddle ops inside forked loader workers (they can deadlock in OpenMP after fork).
    transforms += [{"Normalize": {"mean": [m * 255 for m in IMAGENET_MEAN],
                                  "std": [v * 255 for v in IMAGENET_STD], "data_format": "HWC"}},
                   {"Transpose": {"order": [2, 0, 1]}}]
    return {
        "dataset": {
            "name": Key("str", "DemoDigits", allowed=("ImageNetDataset", "ImageFolder", "DemoDigits"),
                        doc="which dataset class reads the images"),
            "image_root": Key(("str", "null"), None, doc="ImageNetDataset / ImageFolder root folder"),
            "cls_label_path": Key(("str", "null"), None,
                                  doc="ImageNetDataset list file: `relative/path label` per line"),
            "label_file": Key(("str", "null"), None, doc="optional `id name` file with class names"),
            "allow_absolute_paths": Key("bool", False,
                                        doc="ImageNetDataset: list-file lines may give absolute image "
                                            "paths (else every path must stay inside image_root)"),
            "skip_bad_samples": Key("bool", False,
                                    doc="drop unreadable images and report them at epoch end"),
            "cache_images": Key("bool", False,
                                doc="decode every image once, when the data set is built, and keep it "
                                    "in memory (small data sets; the loader workers share the copy)"),
            "transforms_on_batch": Key("bool", False,
                                       doc="with cache_images: the transforms' pixel work runs once per "
                                           "batch in the training process (Paddle matmuls), the workers only "
                                           "draw each image's crop and flip (docs/data.md)"),
            "cache_dir": Key(("str", "null"), None,
                             doc="DemoDigits: where the PNGs go [$PPMOBILENET_CACHE or ~/.cache/ppmobilenet]"),
            "image_size": Key("int", 64, check=_in(8, 1024), doc="DemoDigits: PNG side length"),
        },
        "transforms": Key("transforms", transforms,
                          doc="list of {ClassName: {kwargs}} from paddle.vision.transforms"),
        "sampler": {
            "batch_size": Key("int", 64, check=_in(1, MAX_BATCH), doc="per card; global = this x cards"),
            "shuffle": Key("bool", bool(train)),
            "drop_last": Key("bool", False),
        },
        "loader": {
            "num_workers": Key("int", 2, check=_in(0, MAX_WORKERS)),
            "use_shared_memory": Key("bool", True),
        },
    }


# The schema: section -> key -> Key (or a nested section).
SCHEMA = {
    "Global": {
        "output_dir": Key("str", "output", doc="checkpoints, VisualDL logs, train.log: one run's folder"),
        "overwrite_output": Key("bool", False,
                                doc="a new run may replace the checkpoints of another run in output_dir"),
        "checkpoints": Key(("str", "null"), None, doc="checkpoint prefix to resume from"),
        "pretrained_model": Key(("str", "null"), None,
                                doc=".pdparams (with/without suffix) or fluid-era dir"),
        "device": Key("str", "auto", allowed=("auto", "cpu", "gpu")),
        "epochs": Key("int", required=True, check=_in(1, MAX_EPOCHS)),
        "print_batch_step": Key("int", 10, check=_in(1, MAX_COUNT)),
        "save_interval": Key("int", 1, check=_in(1, MAX_EPOCHS), doc="epochs between epoch_N checkpoints"),
        "save_steps": Key("int", 0, check=_in(0, MAX_COUNT),
                          doc="also write `latest` every N steps inside an epoch (0: only at epoch ends)"),
        "eval_during_train": Key("bool", True),
        "eval_interval": Key("int", 1, check=_in(1, MAX_EPOCHS)),
        "use_visualdl": Key("bool", True),
        "image_shape": Key("list[int]", [3, 224, 224], check=_image_shape,
                           doc="C,H,W used by export / benchmark"),
        "save_inference_dir": Key(("str", "null"), None, doc="[<output_dir>/inference]"),
        "seed": Key(("int", "null"), 0, check=_in(0, MAX_SEED), doc="null: a fresh random seed each run"),
        "cpu_kernels": Key("bool", True,
                           doc="CPU training: compiled kernels for the depthwise convs and "
                               "BatchNorm + activation (built once into the cache; "
                               "PPMOBILENET_CPU_KERNELS=0 also turns them off)"),
        "cpu_packed_depthwise": Key("bool", True,
                                    doc="CPU training: depthwise convs on planes <= 8x8 run with "
                                        "the samples side by side (same numbers, faster)"),
    },
    "AMP": {
        "use_amp": Key("bool", False),
        "level": Key("str", "O1", allowed=("O1", "O2")),
        "scale_loss": Key("float", 1024.0, check=_in(0, MAX_LOSS_SCALE, lo_open=True)),
        "use_dynamic_loss_scaling": Key("bool", True),
    },
    "Arch": {
        "name": Key("str", required=True, allowed=("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small",
                                                   "mobilenet_v3_large")),
        "class_num": Key("int", required=True, check=_in(1, MAX_CLASSES)),
        "scale": Key("float", 1.0, check=_in(0, MAX_SCALE, lo_open=True),
                     doc="width multiplier; MobileNetV1 needs >= 1/32, MobileNetV2 (paddle) >= 1/16"),
        "head": Key("str", "demo", allowed=("demo", "classic"), doc="mobilenet_v1 only"),
        "variant": Key("str", "paddle", allowed=("paddle", "torchvision"),
                       doc="which lineage's architecture: paddle (fluid / PaddleClas) or torchvision "
                           "(torchvision / paddle.vision); MobileNetV1 is one architecture in all sources"),
    },
    "Loss": {
        "name": Key("str", "CELoss", allowed=("CELoss",)),
        "epsilon": Key("float", 0.0, check=_in(0, 1, hi_open=True),
                       doc="label smoothing"),
    },
    "Optimizer": {
        "name": Key("str", "Momentum", allowed=("Momentum",)),
        "momentum": Key("float", 0.9, check=_in(0, 1, hi_open=True)),
        "lr": {
            "name": Key("str", "Cosine", allowed=("Cosine", "Piecewise")),
            "learning_rate": Key("float", 0.1, check=_in(0, MAX_LR, lo_open=True)),
            "warmup_epoch": Key("int", 0, check=_in(0, MAX_EPOCHS), doc="per-step linear warmup"),
            "warmup_start_lr": Key("float", 0.0, check=_in(0, MAX_LR)),
            "decay_epochs": Key("list[int]", [30, 60, 90], check=_in(0, MAX_EPOCHS), doc="Piecewise only"),
            "values": Key("list[float]", [0.1, 0.01, 0.001, 0.0001], check=_in(0, MAX_LR), doc="Piecewise only"),
        },
        "regularizer": {
            "name": Key("str", "L2", allowed=("L2",)),
            "coeff": Key("float", 4.0e-05, check=_in(0, 1)),
        },
    },
    "EMA": {
        "use_ema": Key("bool", False),
        "decay": Key("float", 0.9999, check=_in(0, 1, lo_open=True, hi_open=True)),
    },
    "DataLoader": {
        "Train": _loader_schema(train=True),
        "Eval": _loader_schema(train=False),
    },
    "Metric": {
        "topk": Key("list[int]", [1, 5], check=_at_least(1)),
    },
    "Infer": {
        "infer_imgs": Key(("str", "null"), None, doc="file, folder or list file"),
        "batch_size": Key("int", 8, check=_in(1, MAX_BATCH)),
        "topk": Key("int", 5, check=_at_least(1)),
        "class_id_map_file": Key(("str", "null"), None),
        "transforms": Key(("transforms", "null"), None, doc="null -> DataLoader.Eval.transforms"),
    },
    "Export": {
        "softmax": Key("bool", True, doc="append softmax to the exported graph"),
        "lite_targets": Key("list[str]", [], doc="e.g. [arm, x86]"),
        "lite_python": Key(("str", "null"), None,
                           doc="interpreter with paddlelite [$PPMOBILENET_LITE_PYTHON]"),
        "onnx": Key("bool", False),
        "quant_type": Key(("str", "null"), None, allowed=("QUANT_INT8", "QUANT_INT16"),
                          doc="opt weight quantisation of the arm .nb: QUANT_INT8 | QUANT_INT16"),
        "int8": Key("bool", False, doc="also write inference_int8.onnx (implies onnx)"),
        "int8_calibration_images": Key("int", 128, check=_in(100, 10_000),
                                       doc="DataLoader.Train images that calibrate INT8"),
        "allow_random_weights": Key("bool", False,
                                    doc="export with no Global.pretrained_model (random weights)"),
    },
}


def schema_keys(schema=None, prefix=""):
    """Every dotted leaf key of the schema, in table order ("Global.epochs", ...)."""
    out = []
    for name, spec in (SCHEMA if schema is None else schema).items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, dict):
            out.extend(schema_keys(spec, dotted + "."))
        else:
            out.append(dotted)
    return out


def _all_paths(schema=None, prefix=""):
    """Every dotted section and key: candidates for 'did you mean'."""
    out = []
    for name, spec in (SCHEMA if schema is None else schema).items():
        out.append(prefix + name)
        if isinstance(spec, dict):
            out.extend(_all_paths(spec, prefix + name + "."))
    return out


# --------------------------------------------------------------------------- paths and places

def _fmt(path):
    """('DataLoader','Train','transforms',0,'Resize') -> 'DataLoader.Train.transforms[0].Resize'."""
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


class _Places:
    """Where each value came from: YAML line numbers and the -o options that changed it."""

    def __init__(self, source, lines=None):
        self.source = source
        self.lines = lines or {}
        self.overrides = {}            # path tuple -> option text

    def of(self, path):
        path = tuple(path)
        for n in range(len(path), -1, -1):      # an -o that set this value or a section above it
            if path[:n] in self.overrides:
                return f"-o {self.overrides[path[:n]]}"
        for p, text in self.overrides.items():  # an -o that changed something inside it
            if p[:len(path)] == path:
                return f"-o {text}"
        for n in range(len(path), 0, -1):       # else the YAML line of the deepest key known
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source


def _key_lines(node, path=(), out=None, source="", seen=None):
    """Walk a composed YAML node tree: path -> line of the key; duplicate keys are errors.
    An aliased node (`*a`) is walked once: a "billion laughs" file would take for ever."""
    out = {} if out is None else out
    seen = set() if seen is None else seen
    if id(node) in seen:
        return out
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else str(knode.value)
            sub = path + (key,)
            if key in seen:
                raise ConfigError(f"duplicate key '{_fmt(sub)}' in {source}:{knode.start_mark.line + 1}")
            seen.add(key)
            out[sub] = knode.start_mark.line + 1
            _key_lines(vnode, sub, out, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _key_lines(item, path + (i,), out, source, seen)
    return out


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    loader = None
    try:            # compose once: the node tree gives the lines, the same tree the values
        loader = yaml.SafeLoader(text)   # refuses unprintable characters already here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1} (column {mark.column + 1})" if mark else path
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        raise ConfigError(f"invalid YAML in {where}: {problem}" + (f" ({context})" if context else "")) \
            from None
    except RecursionError:
        raise ConfigError(f"invalid YAML in {path}: nested too deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ConfigError(f"invalid YAML in {path}: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data, _key_lines(node, source=path) if node is not None else {}


# --------------------------------------------------------------------------- overrides

def _parse_value(text):
    """YAML first (0.1, [1, 5], true, null), then Python literals (None, 1e-5), else the string."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):  # ValueError: a 5000-digit integer
        value = text
    if isinstance(value, str):
        try:
            lit = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            lit = value
        value = lit
    if isinstance(value, tuple):
        value = list(value)
    return value


def parse_overrides(overrides):
    """['Global.epochs=3', ...] -> [(('Global', 'epochs'), 3, 'Global.epochs=3'), ...].

    Numeric path segments become ints (list indexes). A malformed option is a ConfigError.
    """
    out = []
    for text in overrides or ():
        if not isinstance(text, str) or "=" not in text:
            raise ConfigError(f"bad -o option {text!r}: expected Section.key=value")
        key, value = text.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p.strip() for p in parts):
            raise ConfigError(f"bad -o option {text!r}: expected Section.key=value")
        # ASCII digits only: "²".isdigit() is true but int("²") fails
        path = tuple(int(p) if re.fullmatch(r"-?[0-9]+", p.strip()) else p.strip() for p in parts)
        out.append((path, _parse_value(value), text))
    return out


def _unknown(path, schema_here, place):
    """The unknown-key message with the closest valid name (siblings first, then anywhere)."""
    name = _fmt(path)
    parent = _fmt(path[:-1])
    siblings = [(f"{parent}.{k}" if parent else k) for k in schema_here]
    leaf = str(path[-1])
    # the same name in another place (Global.class_num -> Arch.class_num), nearest first,
    # then a near spelling here, then a near spelling anywhere
    same = sorted((p for p in _all_paths() if p.rsplit(".", 1)[-1] == leaf),
                  key=lambda p: -len(os.path.commonprefix([p, name])))
    near = difflib.get_close_matches(leaf, list(schema_here), n=1, cutoff=0.6)
    if same:
        guess = same[:1]
    elif near:
        guess = [f"{parent}.{near[0]}" if parent else near[0]]
    else:
        guess = difflib.get_close_matches(name, _all_paths(), n=1, cutoff=0.6)
    hint = f"; did you mean '{guess[0]}'?" if guess else f"; valid keys here: {', '.join(siblings)}"
    return f"unknown key '{name}' in {place}{hint}"


def _apply_override(raw, path, value, text, places):
    """Set one -o value into the raw (unvalidated) config, checking the path against SCHEMA."""
    place = f"-o {text}"
    node, schema = raw, SCHEMA
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(schema, dict):                      # still inside schema sections
            if not isinstance(seg, str) or seg not in schema:
                raise ConfigError(_unknown(path[:i + 1], schema, place))
            spec = schema[seg]
            if last:
                node[seg] = value
                break
            if isinstance(spec, dict):
                if not isinstance(node.get(seg), dict):
                    node[seg] = {}
            elif seg not in node:                         # reaching into a leaf: start from its default
                node[seg] = copy.deepcopy(spec.default)
            node, schema = node[seg], spec
            continue
        # inside a leaf value (a list or a transform's kwargs): plain navigation
        where = _fmt(path[:i])
        if isinstance(node, list):
            if not isinstance(seg, int):
                raise ConfigError(f"{where} is a list; {place} needs a numeric index, got '{seg}'")
            if not -len(node) <= seg < len(node):
                raise ConfigError(f"index {seg} out of range for {where} (length {len(node)}) in {place}")
        elif isinstance(node, dict):
            if isinstance(seg, int) and seg not in node:
                seg = str(seg)
            if not last and seg not in node:
                raise ConfigError(f"no key '{seg}' in {where} (it has: {', '.join(map(str, node)) or 'nothing'})"
                                  f" in {place}")
        else:
            raise ConfigError(f"cannot set {_fmt(path)} in {place}: {where} is {short_repr(node)}, not a list or mapping")
        if last:
            node[seg] = value
        else:
            if node[seg] is None and isinstance(node, dict):
                node[seg] = {}
            node = node[seg]
    places.overrides[tuple(path)] = text


# --------------------------------------------------------------------------- validation


def _type_name(types):
    names = {"list[int]": "list of int", "list[float]": "list of float", "list[str]": "list of str",
             "transforms": "list of {Transform: {kwargs}}"}
    return " or ".join(names.get(t, t) for t in types)


def _coerce(t, v):
    """Return (ok, value) for one type name; ints pass as floats, '4e-5' strings as floats
    (PyYAML reads 4e-5 as a string)."""
    if t == "null":
        return v is None, v
    if t == "bool":
        return isinstance(v, bool), v
    if t == "int":
        return isinstance(v, int) and not isinstance(v, bool), v
    if t == "float":  # a float too large for a float64 comes back as inf, refused as non-finite
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return True, float(v) if abs(v) < 2 ** 1024 else math.inf
        if isinstance(v, str):
            try:
                return True, float(v)
            except ValueError:
                return False, v
        return False, v
    if t == "str":
        return isinstance(v, str), v
    if t.startswith("list["):
        if not isinstance(v, (list, tuple)):
            return False, v
        out = []
        for item in v:
            ok, item = _coerce(t[5:-1], item)
            if not ok:
                return False, v
            out.append(item)
        return True, out
    raise AssertionError(f"unknown schema type {t}")


def _check_transforms(v, path, errors, where):
    """A transform list: each item one {ClassName: kwargs}; names and kwargs checked against
    paddle.vision.transforms."""
    if not isinstance(v, (list, tuple)):
        errors.append(f"{_fmt(path)} in {where(path)}: expected a list of {{Transform: {{kwargs}}}}, "
                      f"got {short_repr(v)}")
        return v
    out = []
    for i, item in enumerate(v):
        p = path + (i,)
        try:
            name, kwargs = check_transform(item)
        except TransformSpecError as e:
            sub = p + ((e.op,) if e.op else ())
            errors.append(f"{_fmt(sub)} in {where(p)}: {e}")
            continue
        out.append({name: kwargs})
    return out


def _check_leaf(spec, v, path, errors, where):
    if "transforms" in spec.types:
        if v is None and "null" in spec.types:
            return None
        return _check_transforms(v, path, errors, where)
    for t in spec.types:
        ok, value = _coerce(t, v)
        if ok:
            break
    else:
        errors.append(f"{_fmt(path)} in {where(path)}: expected {_type_name(spec.types)}, "
                      f"got {short_repr(v)} ({type(v).__name__})")
        return v
    if t in ("float", "list[float]") and not all(math.isfinite(x) for x in _values(value)):
        errors.append(f"{_fmt(path)} in {where(path)}: must be a finite number, got {short_repr(value)}")
        return value
    if spec.allowed and value is not None:
        for item in (value if isinstance(value, list) else [value]):
            if item not in spec.allowed:
                guess = difflib.get_close_matches(str(item), spec.allowed, n=1, cutoff=0.5)
                hint = f"; did you mean '{guess[0]}'?" if guess else ""
                errors.append(f"{_fmt(path)} in {where(path)}: expected one of "
                              f"{', '.join(repr(a) for a in spec.allowed)}, got {short_repr(item)}{hint}")
                return value
    if spec.check and value is not None:
        problem = spec.check(value)
        if problem:
            errors.append(f"{_fmt(path)} in {where(path)}: {problem}, got {short_repr(value)}")
    return value


def _validate(schema, raw, path, errors, where):
    if raw is None:                      # `AMP:` with everything commented out
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{_fmt(path)} in {where(path)}: expected a mapping (section), got {short_repr(raw)}")
        raw = {}
    for k in raw:
        if k not in schema:
            errors.append(_unknown(path + (str(k),), schema, where(path + (k,))))
    out = {}
    for name, spec in schema.items():
        sub = path + (name,)
        if isinstance(spec, dict):
            out[name] = _validate(spec, raw.get(name), sub, errors, where)
        elif name in raw:
            out[name] = _check_leaf(spec, raw[name], sub, errors, where)
        elif spec.required:
            errors.append(f"missing required key '{_fmt(sub)}' in {where(path)}")
        else:
            out[name] = copy.deepcopy(spec.default)
    return out


def _cross_checks(cfg, raw, where):
    """Rules that involve more than one key."""
    errors = []
    for mode in ("Train", "Eval"):
        ds = cfg["DataLoader"][mode]["dataset"]
        base = ("DataLoader", mode, "dataset")
        needs = {"ImageNetDataset": ("image_root", "cls_label_path"), "ImageFolder": ("image_root",)}
        for key in needs.get(ds["name"], ()):
            if not ds[key]:
                errors.append(f"{_fmt(base + (key,))} is required when {_fmt(base + ('name',))} is "
                              f"{ds['name']} (in {where(base)})")
        if ds["transforms_on_batch"] and not ds["cache_images"]:
            errors.append(f"{_fmt(base + ('transforms_on_batch',))} needs {_fmt(base + ('cache_images',))}=true "
                          f"(it resamples the decoded-image cache) (in {where(base + ('transforms_on_batch',))})")
    train_ds = cfg["DataLoader"]["Train"]["dataset"]["name"]
    raw_dl = raw.get("DataLoader") if isinstance(raw.get("DataLoader"), dict) else {}
    if train_ds != "DemoDigits" and "Eval" not in raw_dl and cfg["Global"]["eval_during_train"]:
        errors.append(f"DataLoader.Eval is missing in {where(('DataLoader',))} but DataLoader.Train reads "
                      f"{train_ds} and Global.eval_during_train is true; add DataLoader.Eval or set "
                      f"Global.eval_during_train=false")
    lr = cfg["Optimizer"]["lr"]
    if lr["name"] == "Piecewise" and len(lr["values"]) != len(lr["decay_epochs"]) + 1:
        errors.append(f"Optimizer.lr.values needs len(decay_epochs) + 1 = {len(lr['decay_epochs']) + 1} "
                      f"items for Piecewise, got {len(lr['values'])} (in {where(('Optimizer', 'lr'))})")
    if lr["name"] == "Piecewise" and lr["decay_epochs"] != sorted(lr["decay_epochs"]):
        errors.append(f"Optimizer.lr.decay_epochs must increase, got {lr['decay_epochs']} "
                      f"(in {where(('Optimizer', 'lr', 'decay_epochs'))})")
    if lr["warmup_epoch"] >= cfg["Global"]["epochs"]:
        errors.append(f"Optimizer.lr.warmup_epoch={lr['warmup_epoch']} covers the whole run "
                      f"(Global.epochs={cfg['Global']['epochs']}) (in {where(('Optimizer', 'lr', 'warmup_epoch'))})")
    errors += _scale_floor(cfg["Arch"], where)
    n = cfg["Arch"]["class_num"]
    for section in ("Metric", "Infer"):
        ks = cfg[section]["topk"]
        ks = ks if isinstance(ks, list) else [ks]
        if not any(k > n for k in ks):
            continue
        given = isinstance(raw.get(section), dict) and "topk" in raw[section]
        if given:
            errors.append(f"{section}.topk in {where((section, 'topk'))}: top-k {max(ks)} exceeds "
                          f"Arch.class_num {n}")
        elif section == "Metric":           # a default the user never wrote: fit it to few classes
            cfg["Metric"]["topk"] = [k for k in ks if k <= n] or [1]
        else:
            cfg["Infer"]["topk"] = n
    return errors


def _scale_floor(arch, where):
    """Arch.scale below 1/c, where c is the narrowest int(c * scale) width, gives a layer of
    0 channels (see MIN_SCALE_WIDTH)."""
    variant = None if arch["name"] == "mobilenet_v1" else arch["variant"]
    width = MIN_SCALE_WIDTH.get((arch["name"], variant))
    if width is None or int(width * arch["scale"]) >= 1:
        return []
    lineage = "" if variant is None else f" (Arch.variant={variant})"
    return [f"Arch.scale in {where(('Arch', 'scale'))}: {arch['name']}{lineage} needs >= 1/{width} = "
            f"{1 / width:g} (its narrowest layer, int({width} x scale) channels, would have none), "
            f"got {arch['scale']!r}"]


def _raise(errors):
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{len(errors)} problems in the config:\n  " + "\n  ".join(errors))


def validate_config(raw, source="<config>", lines=None):
    """Validate a raw nested dict and return it with defaults filled (no overrides)."""
    return _finish(copy.deepcopy(raw), _Places(source, lines))


def _finish(raw, places):
    errors = []
    cfg = _validate(SCHEMA, raw, (), errors, places.of)
    if errors:
        _raise(errors)
    errors = _cross_checks(cfg, raw, places.of)
    if errors:
        _raise(errors)
    g = cfg["Global"]
    if g["save_inference_dir"] is None:
        g["save_inference_dir"] = os.path.join(g["output_dir"], "inference")
    return cfg


def load_config(path, overrides=()):
    """Read YAML `path`, apply `-o` strings (`Section.key=value`), fill defaults, validate.

    Returns plain nested dicts. Relative paths inside stay as written (cwd-relative).
    """
    raw, lines = _read_yaml(path)
    places = _Places(str(path), lines)
    for key_path, value, text in parse_overrides(overrides):
        _apply_override(raw, key_path, value, text, places)
    return _finish(raw, places)


def dump_config(cfg, path):
    """Write a resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, allow_unicode=True))
    return path


if __name__ == "__main__":  # python -m ppmobilenet.config -c X.yaml [-o ...]: validate, print it resolved
    from .cli.common import add_config_args, command_parser, run

    def _print_resolved():
        args = add_config_args(command_parser("validate a config and print it resolved")).parse_args()
        print(yaml.safe_dump(load_config(args.config, args.override), sort_keys=False, default_flow_style=None))
    raise SystemExit(run(_print_resolved))
