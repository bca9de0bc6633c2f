"""The one strict loader: tensors go into a model only when every one fits, and when they do
not, one error names every missing, unexpected and mis-shaped tensor (long lists summarised).

Files that name tensors otherwise than the model's state dict (fluid-era directories, other
ecosystems' layouts) pass a layout: {name in the file: model key}. Errors then speak the
file's names, which is what the user can look up.
"""
import numpy as np

from .errors import WeightsError

MAX_NAMES = 20          # names listed per kind before "... and N more"
MAX_MISSHAPED = 10      # mis-shaped lines listed


def classifier_keys(keys):
    """The classifier's state-dict keys (MobileNetV1's demo head has a class conv before the fc)."""
    return {k for k in keys if k.startswith(("fc.", "class_conv."))}


def shape_of(value):
    return [int(d) for d in value.shape]


def mismatch(own, tensors, layout=None, skip=()):
    """Compare `tensors` ({name in the file: array}) with a model's state dict `own`.
    -> (missing, unexpected, misshaped): file names (model keys a layout does not cover), file
    names, and one line per mis-shaped tensor. skip: model keys left out (neither loaded nor missing)."""
    name_of = {key: name for name, key in layout.items()} if layout is not None else {k: k for k in own}
    missing, misshaped = [], []
    for key, target in own.items():
        name = name_of.get(key, key)
        if key in skip:
            continue
        if name not in tensors:
            missing.append(name)
        elif shape_of(tensors[name]) != shape_of(target):
            got, want = shape_of(tensors[name]), shape_of(target)
            misshaped.append(f"{name} {got} (model: {want})" if name == key
                             else f"{name} {got} (expected {want} for {key})")
    known = set(layout) if layout is not None else set(own)
    unexpected = sorted(n for n in tensors if n not in known)
    return missing, unexpected, misshaped


def _names(names):
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" ... and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def describe_mismatch(header, missing, unexpected, misshaped, checked):
    """header, then the summary; `checked`: how many model tensors were looked for."""
    lines = [header]
    if unexpected and len(missing) == checked:
        lines.append(f"  none of the file's {len(unexpected)} tensor names is one the model has: "
                     f"weights of another network, or another naming layout")
    lines += [f"  missing: {_names(missing)}"] if missing else []
    lines += [f"  unexpected: {_names(unexpected)}"] if unexpected else []
    lines += [f"  mis-shaped: {m}" for m in misshaped[:MAX_MISSHAPED]]
    if len(misshaped) > MAX_MISSHAPED:
        lines.append(f"  ... and {len(misshaped) - MAX_MISSHAPED} more mis-shaped")
    return "\n".join(lines)


def check_fit(own, tensors, header, layout=None, skip=(), error=WeightsError):
    """Raise `error` (header + the summary) unless every tensor fits."""
    missing, unexpected, misshaped = mismatch(own, tensors, layout, skip)
    if missing or unexpected or misshaped:
        checked = sum(1 for k in own if k not in skip)
        raise error(describe_mismatch(header, missing, unexpected, misshaped, checked))


def load_strict(model, tensors, header, layout=None, skip=(), error=WeightsError):
    """Check, then copy every tensor (cast to the model's dtype) into `model`; nothing is copied
    when anything does not fit. -> the model keys loaded, in state-dict order."""
    own = model.state_dict()
    check_fit(own, tensors, header, layout, skip, error)
    name_of = {key: name for name, key in layout.items()} if layout is not None else {k: k for k in own}
    loaded = []
    for key, target in own.items():
        if key not in skip:
            target.set_value(_as_dtype(tensors[name_of[key]], target))
            loaded.append(key)
    return loaded


def _as_dtype(value, target):
    want = str(target.dtype).replace("paddle.", "")
    have = str(value.dtype).replace("paddle.", "")
    if have == want:
        return value
    return value.astype(want) if isinstance(value, np.ndarray) else value.astype(target.dtype)
