"""Published MobileNet weights in their sources' own tensor names, mapped onto this package's.

A state dict is recognised from its names alone:

| source | MobileNetV1 | MobileNetV2 | MobileNetV3 | lineage |
|---|---|---|---|---|
| PaddleClas `.pdparams` (plain and `_ssld`) | `blocks.0.depthwise_conv.conv.weight` | `conv2._first_block._expand_conv._conv.weight` | `blocks.0.expand_conv.conv.weight` | paddle |
| paddle.vision `.pdparams` | `conv2_1._depthwise_conv.0.weight` | `features.1.conv.0.0.weight` + `_mean` | `blocks.0.bottleneck_conv.0.weight` | torchvision |
| torchvision `.pth` | - | `features.1.conv.0.0.weight` + `running_mean` | `features.1.block.0.0.weight` | torchvision |

Each layout renames this package's layer paths (`blocks.3.se.reduce`) to the source's
(`features.4.block.2.fc1`), read off the model's state-dict names (like the fluid loader, this
module imports nothing of ppmobilenet.models, which re-exports the weights package). torch's
Linear weights are transposed, PaddleClas's V3 1x1 conv before the classifier becomes our
bias-free Linear. `adapt_layout` hands the strict loader the tensors (in our layout) and the
{file name: model key} map, or says what is wrong: the other lineage (`-o Arch.variant=...`),
another network or width, or, for names it does not know, the closest known layout and its
first mismatches.
"""
import re
from dataclasses import dataclass

import numpy as np

from .errors import WeightsError
from .fluid import V1_BLOCK_NAMES, V2_GROUP_BLOCKS

# paddle.save's own bookkeeping and torch's BN counters: not weights
IGNORED = re.compile(r"(^StructuredToParameterName@@$|\.num_batches_tracked$)")
SHOWN = 4                                                # names an error lists per kind
SCALES = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)   # published widths, for the scale hint
BN = ("weight", "bias", "_mean", "_variance")
BLOCK_PARTS = ("expand", "dwise", "se", "linear")       # in the order torchvision numbers them


class LayoutError(WeightsError):
    """Weights whose names fit no layout of the model the config builds, or fit another model."""


@dataclass(frozen=True)
class Layout:
    source: str          # "PaddleClas", "paddle.vision", "torchvision"
    family: str          # "mobilenet_v1", "mobilenet_v2", "mobilenet_v3"
    variant: str         # the Arch.variant it needs ("" for V1: one architecture everywhere)
    markers: tuple       # names every file of the layout holds
    rename: object       # fn(Structure, our layer path) -> the source's path, or (conv, bn) paths
    conv_bn: tuple       # the source's names for the two layers of a conv + BN unit
    torch: bool = False  # BN statistics running_mean / running_var, Linear weights [out, in]

    @property
    def title(self):
        return f"{self.source} {self.family}"


class Structure:
    """What the renames need to know of our model, read off its state-dict names: the
    weight-holding units in order (a conv + BN pair, a bare conv, a Linear) and each block's parts."""

    def __init__(self, keys):
        keys = list(keys)
        key_set = set(keys)
        self.units, seen = [], set()
        for key in keys:
            if key.endswith(".conv.weight") and key[:-len("conv.weight")] + "bn.weight" in key_set:
                path, kind = key[:-len(".conv.weight")], "conv_bn"
            elif key.endswith(".weight") and not re.search(r"\.(conv|bn)\.weight$", key):
                path, kind = key[:-len(".weight")], "plain"
            else:
                continue
            if path not in seen:
                seen.add(path)
                self.units.append((path, kind, f"{path}.bias" in key_set))
        self.blocks = sorted({int(m.group(1)) for k in keys for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
        self.parts = {i: [p for p in BLOCK_PARTS if any(k.startswith(f"blocks.{i}.{p}.") for k in keys)]
                      for i in self.blocks}


# ------------------------------------------------------------------ renames, one per layout

def _sub(path, table):
    """Replace each `.part` of `path` found in `table`."""
    return ".".join(table.get(p, p) for p in path.split("."))


def _paddleclas_v1(structure, path):
    return _sub(path, {"conv1": "conv", "depthwise": "depthwise_conv", "pointwise": "pointwise_conv"})


def _paddleclas_v2(structure, path):
    m = re.match(r"blocks\.(\d+)\.(\w+)$", path)
    if m:
        group, j = [(g + 2, j) for g, n in enumerate(V2_GROUP_BLOCKS) for j in range(n)][int(m.group(1))]
        block = f"conv{group}._first_block" if j == 0 else f"conv{group}.conv{group}_{j + 1}"
        part = {"expand": "_expand_conv", "dwise": "_bottleneck_conv", "linear": "_linear_conv"}
        return f"{block}.{part[m.group(2)]}"
    return {"fc": "out"}.get(path, path)


def _paddle_vision_v1(structure, path):
    m = re.match(r"blocks\.(\d+)\.(\w+)$", path)
    return f"{V1_BLOCK_NAMES[int(m.group(1))]}._{m.group(2)}_conv" if m else path


def _features_v2(structure, path):
    """torchvision's and paddle.vision's MobileNetV2: features.N, then classifier.1."""
    m = re.match(r"blocks\.(\d+)\.(\w+)$", path)
    if m:
        i = int(m.group(1))
        k = structure.parts[i].index(m.group(2))
        if m.group(2) == "linear":  # a bare conv and BN there, not a conv-norm-activation
            return f"features.{i + 1}.conv.{k}", f"features.{i + 1}.conv.{k + 1}"
        return f"features.{i + 1}.conv.{k}"
    return {"conv1": "features.0", "conv9": f"features.{len(structure.blocks) + 1}",
            "fc": "classifier.1"}.get(path, path)


def _paddleclas_v3(structure, path):
    path = _sub(path, {"conv1": "conv", "expand": "expand_conv", "dwise": "bottleneck_conv",
                       "linear": "linear_conv", "lastconv": "last_second_conv", "pre_fc": "last_conv"})
    return re.sub(r"\.se\.(reduce|expand_conv)$", lambda m: ".mid_se." + {"reduce": "conv1"}.get(
        m.group(1), "conv2"), path)


def _paddle_vision_v3(structure, path):
    path = _sub(path, {"conv1": "conv", "expand": "expand_conv", "dwise": "bottleneck_conv",
                       "linear": "linear_conv", "pre_fc": "classifier.0", "fc": "classifier.3"})
    return re.sub(r"\.se\.(reduce|expand_conv)$", lambda m: ".mid_se." + {"reduce": "fc1"}.get(
        m.group(1), "fc2"), path)


def _torchvision_v3(structure, path):
    m = re.match(r"blocks\.(\d+)\.(\w+)(?:\.(\w+))?$", path)
    if m:
        i = int(m.group(1))
        inner = {"reduce": ".fc1", "expand": ".fc2"}[m.group(3)] if m.group(3) else ""
        return f"features.{i + 1}.block.{structure.parts[i].index(m.group(2))}{inner}"
    return {"conv1": "features.0", "lastconv": f"features.{len(structure.blocks) + 1}",
            "pre_fc": "classifier.0", "fc": "classifier.3"}.get(path, path)


LAYOUTS = [
    Layout("PaddleClas", "mobilenet_v1", "", ("conv.conv.weight", "blocks.0.depthwise_conv.conv.weight"),
           _paddleclas_v1, ("conv", "bn")),
    Layout("PaddleClas", "mobilenet_v2", "paddle",
           ("conv1._conv.weight", "conv2._first_block._expand_conv._conv.weight"),
           _paddleclas_v2, ("_conv", "_batch_norm")),
    Layout("PaddleClas", "mobilenet_v3", "paddle",
           ("conv.conv.weight", "blocks.0.expand_conv.conv.weight", "last_second_conv.conv.weight"),
           _paddleclas_v3, ("conv", "bn")),
    Layout("paddle.vision", "mobilenet_v1", "", ("conv1.0.weight", "conv2_1._depthwise_conv.0.weight"),
           _paddle_vision_v1, ("0", "1")),
    Layout("paddle.vision", "mobilenet_v2", "torchvision",
           ("features.0.1._mean", "features.1.conv.0.0.weight"), _features_v2, ("0", "1")),
    Layout("paddle.vision", "mobilenet_v3", "torchvision",
           ("conv.0.weight", "blocks.0.bottleneck_conv.0.weight", "lastconv.0.weight"),
           _paddle_vision_v3, ("0", "1")),
    Layout("torchvision", "mobilenet_v2", "torchvision",
           ("features.0.1.running_mean", "features.1.conv.0.0.weight"), _features_v2, ("0", "1"),
           torch=True),
    Layout("torchvision", "mobilenet_v3", "torchvision",
           ("features.0.1.running_mean", "features.1.block.0.0.weight"), _torchvision_v3, ("0", "1"),
           torch=True),
]


# ------------------------------------------------------------------ names and values

def _keep(array):
    return array


def _transposed(array):
    if array.ndim != 2:
        raise ValueError(f"has shape {list(array.shape)}; a Linear weight is 2-D")
    return array.T


def _conv1x1_as_linear(array):
    if array.ndim != 4 or tuple(array.shape[2:]) != (1, 1):
        raise ValueError(f"has shape {list(array.shape)}; a 1x1 conv weight was expected")
    return array.reshape(array.shape[:2]).T


def source_names(keys, layout):
    """{our state-dict key: (the source's name, fn(array) -> the array in our layout)}."""
    structure = Structure(keys)
    stats = ("weight", "bias", "running_mean", "running_var") if layout.torch else BN
    out = {}
    for path, kind, bias in structure.units:
        src = layout.rename(structure, path)
        if kind == "conv_bn":
            conv, bn = src if isinstance(src, tuple) else (f"{src}.{layout.conv_bn[0]}",
                                                            f"{src}.{layout.conv_bn[1]}")
            out[f"{path}.conv.weight"] = (f"{conv}.weight", _keep)
            out.update({f"{path}.bn.{ours}": (f"{bn}.{theirs}", _keep) for ours, theirs in zip(BN, stats)})
            continue
        weight = _keep
        if path == "pre_fc" and layout.source == "PaddleClas":
            weight = _conv1x1_as_linear
        elif layout.torch and re.match(r"(fc|pre_fc)$", path):
            weight = _transposed
        out[f"{path}.weight"] = (f"{src}.weight", weight)
        if bias:
            out[f"{path}.bias"] = (f"{src}.bias", _keep)
    return out


# ------------------------------------------------------------------ recognition and checks

def family_of(model):
    name = getattr(model, "arch_name", "")
    return "mobilenet_v3" if name.startswith("mobilenet_v3") else name


def _recognise(names):
    return next((lay for lay in LAYOUTS if all(m in names for m in lay.markers)), None)


def _v3_size(names):
    """11 blocks: small, 15: large (counted from the block indices in the names)."""
    idx = {int(m.group(1)) for n in names for m in [re.match(r"(?:blocks|features)\.(\d+)\.", n)] if m}
    count = len(idx) - (2 if any(n.startswith("features.") for n in names) else 0)  # stem, last conv
    return {11: "small", 15: "large"}.get(count)


def _shown(names):
    names = sorted(names)
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _mismatch_lines(missing, unexpected):
    return ([f"  missing: {_shown(missing)}"] if missing else []) + \
        ([f"  unexpected: {_shown(unexpected)}"] if unexpected else [])


def _closest(names, model):
    """(title, missing, unexpected) of the known layout for this model's network whose names
    overlap the file's most (this package's own names included)."""
    keys = list(model.state_dict())
    candidates = [("ppmobilenet", set(keys))]
    candidates += [(lay.title, {src for src, _ in source_names(keys, lay).values()})
                   for lay in LAYOUTS if lay.family == family_of(model)
                   and lay.variant in ("", getattr(model, "variant", ""))]
    # a name counts when the file holds it, or holds it under a prefix (`model.`, `backbone.`)
    tails = {n.split(".", i)[-1] for n in names for i in range(n.count(".") + 1)}
    title, want = max(candidates, key=lambda c: len(tails & c[1]))
    return title, sorted(want - names), sorted(names - want)


def _wrong_network(layout, names, model):
    """The -o fixes these weights need, or [] when the model is theirs."""
    wanted = layout.family
    if layout.family == "mobilenet_v3":
        wanted += "_" + (_v3_size(names) or getattr(model, "size", "large"))
    fixes = [f"-o Arch.name={wanted}"] if wanted != model.arch_name else []
    if layout.variant and layout.variant != getattr(model, "variant", layout.variant):
        fixes.append(f"-o Arch.variant={layout.variant}")
    if layout.family == "mobilenet_v1" == family_of(model) and model.head != "classic":
        fixes.append("-o Arch.head=classic")
    return fixes


def _fits(tensors, layout, own):
    """Do `tensors` (already in our layout, keyed by the source's names) fit `own` but for the
    classifier?"""
    return all(list(tensors[name].shape) == list(own[key].shape)
               for name, key in layout.items() if not key.startswith("fc."))


def _guess_scale(state, model, layout):
    """The published width whose model the weights fit (all but the classifier), or None."""
    for scale in SCALES:
        other = type(model)(**{**model.config(), "scale": scale})
        own = other.state_dict()
        try:
            tensors, names = _convert(state, source_names(list(own), layout))
        except (KeyError, ValueError):
            continue
        if _fits(tensors, names, own):
            return scale
    return None


def _convert(state, mapping):
    """-> ({source name: array in our layout}, {source name: our key}); KeyError for a name the
    state lacks, ValueError (naming the tensor) for one that cannot be converted."""
    tensors, names = {}, {}
    for key, (src, fn) in mapping.items():
        try:
            tensors[src] = np.ascontiguousarray(fn(np.asarray(state[src])))
        except ValueError as e:
            raise ValueError(f"{src} {e}") from None
        names[src] = key
    return tensors, names


def adapt_layout(state, model, where="weights"):
    """state ({name: array}) as a published file holds it -> (tensors, layout, title): the
    tensors in our layout keyed by the file's names, {file name: model key} for the strict loader
    (None when the names already are the model's), and the layout's title ("torchvision
    mobilenet_v3", None for our own names). LayoutError naming `where` when the weights belong to
    another lineage, network or width, or to no known layout."""
    state = {str(k): v for k, v in state.items() if not IGNORED.search(str(k))}
    names = set(state)
    if not family_of(model) or "conv1.conv.weight" in names:
        return state, None, None              # our own names: the strict loader checks them
    layout = _recognise(names)
    if layout is None:
        title, missing, unexpected = _closest(names, model)
        raise LayoutError("\n".join(
            [f"{where}: the tensor names are of no layout known for {model.arch_name}; the closest "
             f"is {title} ({len(missing)} of its names missing, {len(unexpected)} unexpected):"]
            + _mismatch_lines(missing, unexpected)))
    fixes = _wrong_network(layout, names, model)
    if fixes:
        variant = getattr(model, "variant", "")
        raise LayoutError(f"{where}: these are {layout.title} weights"
                          f"{f' ({layout.variant} lineage)' if layout.variant else ''}; the config "
                          f"builds {model.arch_name}{f' variant {variant}' if variant else ''}: "
                          f"set {' '.join(fixes)}")
    mapping = source_names(list(model.state_dict()), layout)
    wanted = {src for src, _ in mapping.values()}
    missing, unexpected = sorted(wanted - names), sorted(names - wanted)
    if missing or unexpected:
        raise LayoutError("\n".join([f"{where}: {layout.title} names, but not those of "
                                     f"{model.arch_name} x{model.scale}:"]
                                    + _mismatch_lines(missing, unexpected)))
    try:
        tensors, by_name = _convert(state, mapping)
    except ValueError as e:
        raise LayoutError(f"{where}: {e}") from None
    if not _fits(tensors, by_name, model.state_dict()):
        scale = _guess_scale(state, model, layout)
        if scale is not None and scale != model.scale:
            raise LayoutError(f"{where}: {layout.title} x{scale} weights; the config builds "
                              f"x{model.scale}: set -o Arch.scale={scale}")
    return tensors, by_name, layout.title
