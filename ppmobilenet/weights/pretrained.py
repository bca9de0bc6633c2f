"""Weights into a model for fine-tuning, evaluation, export or prediction: a .pdparams / .pdema /
.safetensors file, or a fluid-era directory, always through the strict loader.

Where another layout's names plug in: `layout` ({name in the file: model key}), passed to
load_pretrained / load_state, is applied by the strict loader before anything is compared.
"""
import os

from .errors import WeightsError
from .fluid import load_fluid_params
from .layouts import adapt_layout
from .paths import is_safetensors
from .pickle_reader import load_pickle_weights
from .safetensors_file import check_recorded_arch, read_metadata, read_safe_weights
from .strict import classifier_keys, load_strict, shape_of
from .torch_file import is_torch_file, read_torch_state


def pretrained_file(path, key="Global.pretrained_model"):
    """The file Global.pretrained_model names: `path` itself, or `path`.pdparams."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if os.path.isfile(path + ".pdparams"):
        return path + ".pdparams"
    raise WeightsError(f"{key}={path}: neither {path} nor {path}.pdparams exists")


def read_weights_file(file, where):
    """A .safetensors (read safely, CRCs checked) or a paddle.save state dict (read by the
    restricted pickle reader: nothing in it can run) -> (state of numpy arrays, format)."""
    if is_safetensors(file):
        return read_safe_weights(file)[0], "safetensors"
    if is_torch_file(file):
        return read_torch_state(file), "torch.save"
    try:
        state = load_pickle_weights(file)
    except WeightsError as e:
        raise type(e)(f"{where}: {e}") from None
    return plain_state(state, file, where), "pdparams"


def plain_state(state, file, where):
    """A state dict as paddle.load would hand it over: paddle.save's bookkeeping key dropped,
    Paddle 2.1's (name, array) pairs unwrapped. WeightsError when `state` is not a dict."""
    if not isinstance(state, dict):
        raise WeightsError(f"{where}: {file} does not hold a state dict")
    state = dict(state)
    state.pop("StructuredToParameterName@@", None)
    state = {k: v[1] if _is_named_array(v) else v for k, v in state.items()}
    odd = sorted(str(k) for k, v in state.items() if not hasattr(v, "shape"))
    if odd:   # the strict loader compares shapes: say what is wrong before it trips on them
        raise WeightsError(f"{where}: {file} is not a state dict of tensors ({', '.join(odd[:5])} "
                           f"{'is' if len(odd) == 1 else 'are'} not arrays)")
    return state


def _is_named_array(value):
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) \
        and hasattr(value[1], "shape")


def load_pretrained(model, path, skip_classifier_on_mismatch=True, key="Global.pretrained_model",
                    layout=None):
    """Load weights for fine-tuning or evaluation.

    path: a .pdparams / .pdema / .safetensors file (.pdparams may be left out) or a fluid-era
    directory of one file per parameter (the released `<Model>_pretrained` folders, or the
    demo's save_persistables output). When only the classifier's shapes differ (another class
    count) and skip_classifier_on_mismatch is set, the classifier keeps its fresh weights and
    the report says so. Returns {"source", "format", "loaded", "skipped", "message"}.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_fluid_dir(model, path, skip_classifier_on_mismatch, key)
    file = pretrained_file(path, key)
    state, fmt = read_weights_file(file, f"{key}={path}")
    if fmt == "safetensors":   # a file of ours says which Arch it holds: name what to set
        check_recorded_arch(read_metadata(file), model, f"{key}={path}")
    if layout is None:   # PaddleClas / paddle.vision / torchvision names -> ours (weights.layouts)
        state, layout, title = adapt_layout(state, model, f"{key}={path}")
        fmt += f", {title} names" if title else ""
    header = f"{key}={path}: the weights in {file} do not fit the model built from Arch:"
    return load_state(model, state, file, fmt, header, skip_classifier_on_mismatch, layout)


def load_state(model, state, source, fmt, header, skip_classifier_on_mismatch=False, layout=None):
    """A state dict in memory into `model`, strictly. With skip_classifier_on_mismatch, a
    classifier of another class count is left fresh when it is the only thing that differs."""
    own = model.state_dict()
    skip = _mismatched_classifier(own, state, layout) if skip_classifier_on_mismatch else set()
    loaded = load_strict(model, state, header, layout=layout, skip=skip)
    return report(source, fmt, len(loaded), sorted(skip))


def _mismatched_classifier(own, state, layout):
    """The classifier keys to leave fresh: all of them when every mis-shaped tensor is one."""
    name_of = {key: name for name, key in layout.items()} if layout is not None else {k: k for k in own}
    bad = {k for k, v in own.items() if name_of.get(k) in state and shape_of(state[name_of[k]]) != shape_of(v)}
    heads = classifier_keys(own)
    if not bad or not bad <= heads:
        return set()
    return {k for k in heads if name_of.get(k) in state}


def _load_fluid_dir(model, path, skip_on_mismatch, key):
    try:
        rep = load_fluid_params(model, path, skip_classifier=False)
    except WeightsError as first:
        if not skip_on_mismatch:
            raise WeightsError(f"{key}={path}: {first}") from None
        try:
            rep = load_fluid_params(model, path, skip_classifier=True)
        except WeightsError:
            raise WeightsError(f"{key}={path}: {first}") from None
    return report(path, f"fluid ({rep['scheme']} names)", len(rep["loaded"]), rep["skipped"])


def report(source, fmt, loaded, skipped):
    msg = f"loaded {loaded} tensors from {source} [{fmt}]"
    if skipped:
        msg += (f"; classifier NOT loaded (class count differs), kept fresh: "
                f"{', '.join(skipped)}")
    return {"source": source, "format": fmt, "loaded": loaded, "skipped": list(skipped),
            "message": msg}


def load_weights(model, path, own_dir=None, log=None):
    """Weights for export or prediction: a .pdparams checkpoint (with or without the suffix), a
    .safetensors file or a fluid-era directory. The classifier must fit too: an export with a
    re-initialised head would ship garbage. own_dir, log: unused, kept until the callers drop
    them (predictors.py, bench/) - no pickle needs a warning now that none can run code."""
    return load_pretrained(model, path, skip_classifier_on_mismatch=False)
