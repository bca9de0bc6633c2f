"""Checkpoints (`<prefix>.pdparams/.pdopt/.pdstates[/.pdema]`), exact resume and pretrained weights.

Saving a set: every file is first written in full to `<file>.tmp.<pid>` in the same folder and
fsynced, .pdstates last; then they are moved into place with os.replace, .pdstates last. The
.pdstates holds a CRC32 of each companion file and ends with a CRC32 trailer of its own, so:
- a kill while the temp files are written leaves the previous set whole (it is still in place);
- a kill between two renames leaves a mixed set, which the next load detects by CRC and
  completes from the temp files the save had fully written (roll forward);
- a damaged or foreign file in a set is refused by CRC, naming the file.
A failed write (full disk) removes its temp files and raises CheckpointError naming the file.
"""
import glob
import io
import os
import re
import sys
import time
import warnings
import zlib

import paddle

from ..errors import PPMobileNetError
from ..models import FluidParamsError, load_fluid_params

FORMAT_VERSION = 1
PARTS = (".pdparams", ".pdopt", ".pdema")
SUFFIXES = PARTS + (".pdstates",)
# Test hook: seconds to sleep after the temp files are written and before they are renamed, so
# a test can kill the process in the middle of a save. Unset in normal use.
PAUSE_ENV = "PPMOBILENET_SAVE_PAUSE"
# .pdstates ends with this line; pickle readers (paddle.load) stop before it
TRAILER = re.compile(rb"\nPPMOBILENET-CRC32 ([0-9a-f]{8})\n$")


class CheckpointError(ValueError, PPMobileNetError):
    """A checkpoint or pretrained file that cannot be used; the message names the file."""


def strip_suffix(path):
    """`out/latest.pdparams` and `out/latest` both name the prefix `out/latest`."""
    path = os.fspath(path)
    for s in SUFFIXES:
        if path.endswith(s):
            return path[: -len(s)]
    return path


def _crc(path):
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _write(obj, path, final):
    """paddle.save + fsync to `path`; .pdstates get their CRC trailer. OSError -> CheckpointError
    naming `final` (the file the temp stands for)."""
    try:
        if final.endswith(".pdstates"):
            buf = io.BytesIO()
            paddle.save(obj, buf)
            data = buf.getvalue()
            data += b"\nPPMOBILENET-CRC32 %08x\n" % (zlib.crc32(data) & 0xFFFFFFFF)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            paddle.save(obj, path)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        _remove(path)
        raise CheckpointError(f"cannot save {final}: {e.strerror or e}") from None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_save(obj, path):
    """Write one file through `<path>.tmp.<pid>` and os.replace: readers see the old file or
    the new one (a .pdstates also gets its CRC trailer)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    _write(obj, tmp, path)
    os.replace(tmp, path)


def _pid_alive(pid):
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temps(prefix):
    """{pid: {suffix: temp path}} for the temp files of `prefix` left by writers now dead."""
    out = {}
    for tmp in glob.glob(glob.escape(prefix) + ".pd*.tmp.*"):
        head, _, pid = tmp.rpartition(".tmp.")
        suffix = head[len(prefix):]
        if suffix in SUFFIXES and pid.isdigit() and not _pid_alive(int(pid)):
            out.setdefault(int(pid), {})[suffix] = tmp
    return out


def _clean_stale_temps(prefix):
    for files in _temps(prefix).values():
        for tmp in files.values():
            _remove(tmp)


def save_checkpoint(prefix, model, optimizer=None, states=None, ema=None):
    """Write `prefix`.pdparams (+ .pdopt, .pdema) and `prefix`.pdstates as one set.

    model/ema: layers or state dicts; optimizer: a paddle optimizer or its state dict;
    states: a dict of training state (epoch, step, best metric, scheduler, RNG...).
    """
    prefix = strip_suffix(prefix)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    _clean_stale_temps(prefix)
    objs = {".pdparams": _state(model)}
    if optimizer is not None:
        opt_state = _state(optimizer)
        objs[".pdopt"] = portable_opt_state(opt_state, model) if hasattr(model, "named_parameters") \
            else opt_state
    if ema is not None:
        objs[".pdema"] = _state(ema)
    pid = os.getpid()
    temps, crcs = {}, {}
    try:
        for suffix, obj in objs.items():
            tmp = f"{prefix}{suffix}.tmp.{pid}"
            temps[suffix] = tmp
            _write(obj, tmp, prefix + suffix)
            crcs[suffix] = _crc(tmp)
        states = dict(states or {})
        states.update(format_version=FORMAT_VERSION, files=crcs, saved_at=time.time())
        temps[".pdstates"] = f"{prefix}.pdstates.tmp.{pid}"
        _write(states, temps[".pdstates"], prefix + ".pdstates")
    except BaseException:
        for tmp in temps.values():
            _remove(tmp)
        raise
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if pause > 0:
        print(f"checkpoint {prefix}: temp files written, pausing {pause}s before rename",
              flush=True)
        time.sleep(pause)
    _finish(prefix, temps, list(objs))


def _finish(prefix, temps, parts):
    for suffix in parts + [".pdstates"]:  # .pdstates last: it vouches for the others
        if suffix in temps:
            os.replace(temps[suffix], prefix + suffix)
    # a set without EMA must not keep an older set's .pdema beside it
    if ".pdema" not in parts:
        _remove(prefix + ".pdema")


def _state(obj):
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


SEP = "::"


def _param_names(model):
    """paddle parameter name (conv2d_12.w_0, set by a process-wide counter) -> state_dict key."""
    return {p.name: key for key, p in model.named_parameters()}


def portable_opt_state(opt_state, model):
    """Key the optimizer state by state_dict keys instead of the auto-generated parameter names,
    which depend on how many layers the process built before: a .pdopt then loads into a model
    built anywhere (another process, a test, after other models)."""
    names = _param_names(model)
    by_len = sorted(names, key=len, reverse=True)
    out = {}
    for k, v in opt_state.items():
        if k == "master_weights" and isinstance(v, dict):
            out[k] = {names.get(n, n): t for n, t in v.items()}
            continue
        for n in by_len:
            if k.startswith(n + "_"):
                k = names[n] + SEP + k[len(n) + 1:]
                break
        out[k] = v
    return out


def restore_opt_state(state, model):
    """The inverse of portable_opt_state for the parameters of `model`; an accumulator whose
    shape does not fit its parameter (another width) is refused by name."""
    params = dict(model.named_parameters())

    def fit(key, value, what):
        shape = list(getattr(value, "shape", []))
        want = list(params[key].shape)
        if shape not in ([], [1], want):
            raise CheckpointError(f"{what} for {key} has shape {shape}, the model's {key} is {want}")

    out = {}
    for k, v in state.items():
        if k == "master_weights" and isinstance(v, dict):
            for n, t in v.items():
                if n in params:
                    fit(n, t, "master weight")
            out[k] = {params[n].name if n in params else n: t for n, t in v.items()}
        elif SEP in k:
            key, rest = k.split(SEP, 1)
            if key not in params:
                raise CheckpointError(f"optimizer state for {key!r}, which the model lacks")
            fit(key, v, f"optimizer state {rest}")
            out[f"{params[key].name}_{rest}"] = v
        else:
            out[k] = v
    return out


def checkpoint_exists(prefix):
    prefix = strip_suffix(prefix)
    return os.path.exists(prefix + ".pdparams") and os.path.exists(prefix + ".pdstates")


def _read_states_file(path, where):
    """A .pdstates (its own CRC trailer checked when present) -> the dict."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read {path}: {e.strerror or e}") from None
    m = TRAILER.search(data)
    if m:
        data = data[:m.start()]
        if zlib.crc32(data) & 0xFFFFFFFF != int(m.group(1), 16):
            raise CheckpointError(f"{where}: {path} is damaged (CRC of its contents does not "
                                  "match its trailer)")
    try:
        states = paddle.load(io.BytesIO(data))
    except Exception as e:  # truncated or foreign file
        raise CheckpointError(f"{where}: cannot read {path}: {e}") from None
    if not isinstance(states, dict) or "format_version" not in states:
        raise CheckpointError(f"{where}: {path} is not a ppmobilenet training state "
                              "(no format_version); use Global.pretrained_model for bare weights")
    if states["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{where}: {path} has format version {states['format_version']}, "
                              f"newer than this ppmobilenet understands ({FORMAT_VERSION})")
    return states


def _load_set(prefix, where):
    path = prefix + ".pdstates"
    for need in (prefix + ".pdparams", path):
        if not os.path.exists(need):
            raise CheckpointError(f"{where}: {need} does not exist")
    states = _read_states_file(path, where)
    for suffix, crc in states.get("files", {}).items():
        part = prefix + suffix
        if not os.path.exists(part):
            raise CheckpointError(f"{where}: {part} is missing but {path} lists it")
        if _crc(part) != crc:
            raise CheckpointError(
                f"{where}: {part} does not belong to {path} (CRC mismatch: the file is damaged, "
                "or comes from another save); resume from an epoch_N checkpoint instead")
    return states


def _roll_forward(prefix):
    """Complete a save that was killed between its renames: its temp files were fully written,
    and its temp .pdstates vouches for them. Returns True when a set was completed."""
    for pid, temps in sorted(_temps(prefix).items(), reverse=True):
        if ".pdstates" not in temps:
            continue
        try:
            states = _read_states_file(temps[".pdstates"], "roll forward")
        except CheckpointError:
            continue
        files = states.get("files", {})
        if all(_crc(temps.get(suffix, prefix + suffix)) == crc
               if os.path.exists(temps.get(suffix, prefix + suffix)) else False
               for suffix, crc in files.items()):
            _finish(prefix, temps, list(files))
            _clean_stale_temps(prefix)
            return True
    return False


def read_states(prefix, key="Global.checkpoints"):
    """Load and check the set `prefix` (format version, CRCs of every file); a set mixed by a
    kill between renames is completed first. Returns the .pdstates dict."""
    prefix = strip_suffix(prefix)
    where = f"{key}={prefix}"
    try:
        return _load_set(prefix, where)
    except CheckpointError:
        if not _roll_forward(prefix):
            raise
    return _load_set(prefix, where)


def load_checkpoint(prefix, model, optimizer=None, ema=None, key="Global.checkpoints"):
    """Restore weights, optimizer and EMA from a set written by save_checkpoint; returns states."""
    prefix = strip_suffix(prefix)
    states = read_states(prefix, key)
    _set_strict(model, _load_file(prefix + ".pdparams", key), prefix + ".pdparams", key)
    if optimizer is not None:
        if ".pdopt" not in states["files"]:
            raise CheckpointError(f"{key}={prefix}: {prefix}.pdopt is missing; cannot resume "
                                  "the optimizer (use Global.pretrained_model to start anew)")
        try:
            opt_state = restore_opt_state(_load_file(prefix + ".pdopt", key), model)
        except CheckpointError as e:
            raise CheckpointError(f"{key}={prefix}: {prefix}.pdopt: {e}") from None
        # the lr schedule is rebuilt from the config and replayed by the trainer (it follows a
        # changed Global.epochs / Optimizer.lr); the stored one would override it
        if "LR_Scheduler" in opt_state and hasattr(optimizer._learning_rate, "state_dict"):
            opt_state["LR_Scheduler"] = optimizer._learning_rate.state_dict()  # keep it as is
        optimizer.set_state_dict(opt_state)
    if ema is not None and ".pdema" in states["files"]:
        ema.set_state_dict(_load_file(prefix + ".pdema", key))
    return states


def _load_file(path, key):
    try:
        return paddle.load(path)
    except Exception as e:
        raise CheckpointError(f"{key}={strip_suffix(path)}: cannot read {path}: {e}") from None


def _set_strict(model, state, path, key):
    """set_state_dict that refuses missing, unexpected or mis-shaped tensors, naming them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [f"{k} {list(state[k].shape)} (model: {list(own[k].shape)})"
                 for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or unexpected or misshaped:
        lines = [f"{key}={path}: the weights do not fit the model built from Arch:"]
        lines += [f"  missing: {', '.join(missing)}"] if missing else []
        lines += [f"  unexpected: {', '.join(unexpected)}"] if unexpected else []
        lines += [f"  mis-shaped: {m}" for m in misshaped]
        raise CheckpointError("\n".join(lines))
    model.set_state_dict(state)


def _classifier_keys(keys):
    return {k for k in keys if k.startswith(("fc.", "class_conv."))}


def load_pretrained(model, path, skip_classifier_on_mismatch=True, key="Global.pretrained_model"):
    """Load weights for fine-tuning or evaluation.

    path: a .pdparams / .pdema / .safetensors file (.pdparams may be left out) or a fluid-era
    directory of one file per parameter (the released `<Model>_pretrained` folders, or the
    demo's save_persistables output). When only the classifier's shapes differ (another class count)
    and skip_classifier_on_mismatch is set, the classifier keeps its fresh weights and the
    report says so. Returns {"source", "format", "loaded", "skipped", "message"}.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_fluid_dir(model, path, skip_classifier_on_mismatch, key)
    file = pretrained_file(path, key)
    fmt = "pdparams"
    if file.endswith(".safetensors"):
        from .safe_weights import read_safe_weights  # its errors name the file
        state, _ = read_safe_weights(file)
        fmt = "safetensors"
    else:
        try:
            state = paddle.load(file)
        except Exception as e:
            raise CheckpointError(f"{key}={path}: cannot read {file}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{key}={path}: {file} does not hold a state dict")
    own = model.state_dict()
    bad = {k for k in own if k in state and list(state[k].shape) != list(own[k].shape)}
    skipped = []
    heads = _classifier_keys(own)
    if bad and skip_classifier_on_mismatch and bad <= heads:
        skipped = sorted(k for k in heads if k in state)
        state = {k: v for k, v in state.items() if k not in heads}
        own_rest = {k: v for k, v in own.items() if k not in heads}
        missing = sorted(set(own_rest) - set(state))
    else:
        missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected or (bad and not skipped):
        lines = [f"{key}={path}: the weights in {file} do not fit the model built from Arch:"]
        lines += [f"  missing: {', '.join(missing)}"] if missing else []
        lines += [f"  unexpected: {', '.join(unexpected)}"] if unexpected else []
        lines += [f"  mis-shaped: {k} {list(state[k].shape)} (model: {list(own[k].shape)})"
                  for k in sorted(bad) if not skipped]
        raise CheckpointError("\n".join(lines))
    with warnings.catch_warnings():  # "Skip loading for fc.weight": reported below instead
        warnings.simplefilter("ignore")
        model.set_state_dict(state)
    return _report(file, fmt, len(state), skipped)


def pretrained_file(path, key="Global.pretrained_model"):
    """The file Global.pretrained_model names: `path` itself, or `path`.pdparams."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if os.path.isfile(path + ".pdparams"):
        return path + ".pdparams"
    raise CheckpointError(f"{key}={path}: neither {path} nor {path}.pdparams exists")


def _load_fluid_dir(model, path, skip_on_mismatch, key):
    try:
        rep = load_fluid_params(model, path, skip_classifier=False)
    except FluidParamsError as first:
        if not skip_on_mismatch:
            raise CheckpointError(f"{key}={path}: {first}") from None
        try:
            rep = load_fluid_params(model, path, skip_classifier=True)
        except FluidParamsError:
            raise CheckpointError(f"{key}={path}: {first}") from None
    return _report(path, f"fluid ({rep['scheme']} names)", len(rep["loaded"]), rep["skipped"])


def _report(source, fmt, loaded, skipped):
    msg = f"loaded {loaded} tensors from {source} [{fmt}]"
    if skipped:
        msg += (f"; classifier NOT loaded (class count differs), kept fresh: "
                f"{', '.join(skipped)}")
    return {"source": source, "format": fmt, "loaded": loaded, "skipped": list(skipped),
            "message": msg}


def describe(prefix):
    """One line for logs: what a checkpoint set holds."""
    s = read_states(prefix)
    return (f"{strip_suffix(prefix)}: epoch {s.get('epoch')} step {s.get('global_step')} "
            f"best top-1 {s.get('best_metric')} (epoch {s.get('best_epoch')})")


if __name__ == "__main__":  # python -m ppmobilenet.engine.checkpoint out/latest
    for p in sys.argv[1:]:
        print(describe(p))
