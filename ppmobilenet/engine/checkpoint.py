"""Training-state sets (`<prefix>.pdparams/.pdopt/.pdstates[/.pdema]`) for exact resume.
Bare weights (Global.pretrained_model, export, conversion) are ppmobilenet.weights' job.

Saving a set: every file is first written in full to `<file>.tmp.<pid>` in the same folder and
fsynced, .pdstates last; then they are moved into place (ppmobilenet.io.replace_atomic), .pdstates last. The
.pdstates holds a CRC32 of each companion file and ends with a CRC32 trailer of its own, so:
- a kill while the temp files are written leaves the previous set whole (it is still in place);
- a kill between two renames leaves a mixed set, which the next load detects by CRC and
  completes from the temp files the save had fully written (roll forward);
- a damaged or foreign file in a set is refused by CRC, naming the file.
A failed write (full disk) removes its temp files and raises CheckpointError naming the file.

Nothing in a set can run code when it is read. The .pdstates is JSON (state_json.py); the
.pdparams / .pdopt / .pdema stay paddle.save pickles, since paddle.load, PaddleClas and
paddle.vision read them, and hold only arrays and plain values, so they are read by the
restricted pickle reader (ppmobilenet.weights.pickle_reader), as is the pickle .pdstates of
earlier versions. A file asking for anything else is refused, naming it and what it asked for.
"""
import glob
import os
import re
import sys
import time
import zlib

import numpy as np
import paddle

from ..errors import PPMobileNetError
from ..io import fsync_file, pid_alive, remove_quietly, replace_atomic
from ..weights import WeightsError, load_strict, strip_suffix
from ..weights.paths import CHECKPOINT_SUFFIXES as SUFFIXES
from ..weights.pickle_reader import RNG_STATE, Opaque, load_pickle_bytes, load_pickle_weights
from .state_json import StateFormatError, generator_state
from .state_json import dumps as states_to_json, loads as states_from_json

FORMAT_VERSION = 1      # of the states' contents; JSON or pickle is told by the first byte
PARTS = (".pdparams", ".pdopt", ".pdema")
# Test hook: seconds to sleep after the temp files are written and before they are renamed, so
# a test can kill the process in the middle of a save. Unset in normal use.
PAUSE_ENV = "PPMOBILENET_SAVE_PAUSE"
# .pdstates ends with this line (a pickle .pdstates of earlier versions too)
TRAILER = re.compile(rb"\nPPMOBILENET-CRC32 ([0-9a-f]{8})\n$")


# One error type for every weights file, a checkpoint set's problems included.
CheckpointError = WeightsError


def _crc(path):
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _write(obj, path, final):
    """paddle.save + fsync to `path`; a .pdstates is JSON with its CRC trailer. OSError ->
    CheckpointError naming `final` (the file the temp stands for)."""
    try:
        if final.endswith(".pdstates"):
            data = states_to_json(obj).encode("utf-8")
            data += b"\nPPMOBILENET-CRC32 %08x\n" % (zlib.crc32(data) & 0xFFFFFFFF)
            with open(path, "wb") as f:
                f.write(data)
        else:
            paddle.save(obj, path)
        fsync_file(path)
    except OSError as e:
        remove_quietly(path)
        raise CheckpointError(f"cannot save {final}: {e.strerror or e}") from None


def atomic_save(obj, path):
    """Write one file through `<path>.tmp.<pid>`, then move it into place: readers see the old
    file or the new one (a .pdstates also gets its CRC trailer)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    _write(obj, tmp, path)
    replace_atomic(tmp, path)


def _temps(prefix):
    """{pid: {suffix: temp path}} for the temp files of `prefix` left by writers now dead."""
    out = {}
    for tmp in glob.glob(glob.escape(prefix) + ".pd*.tmp.*"):
        head, _, pid = tmp.rpartition(".tmp.")
        suffix = head[len(prefix):]
        # our own pid's temps are left over too: this process saves one set at a time and
        # removes the temps of a failed save, so they belong to an earlier process that had
        # this pid (a restarted container's trainer is pid 1 again)
        if suffix in SUFFIXES and pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            out.setdefault(int(pid), {})[suffix] = tmp
    return out


def _clean_stale_temps(prefix):
    for files in _temps(prefix).values():
        for tmp in files.values():
            remove_quietly(tmp)


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
            remove_quietly(tmp)
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
            replace_atomic(temps[suffix], prefix + suffix)
    # a set without EMA must not keep an older set's .pdema beside it
    if ".pdema" not in parts:
        remove_quietly(prefix + ".pdema")


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
    states = _parse_states(data, path, where)
    if not isinstance(states, dict) or "format_version" not in states:
        raise CheckpointError(f"{where}: {path} is not a ppmobilenet training state "
                              "(no format_version); use Global.pretrained_model for bare weights")
    if states["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{where}: {path} has format version {states['format_version']}, "
                              f"newer than this ppmobilenet understands ({FORMAT_VERSION})")
    return states


def _parse_states(data, path, where):
    """The bytes of a .pdstates (trailer removed) -> its object: JSON, or the pickle of earlier
    versions read by the restricted reader, paddle's RNG states rebuilt from their plain data."""
    if data[:1] == b"\x80":                        # a pickle (protocol 2 or later)
        try:
            return _rebuild_rng(load_pickle_bytes(data, path, opaque=RNG_STATE))
        except (WeightsError, StateFormatError) as e:
            raise CheckpointError(f"{where}: {e}" if str(e).startswith(path) else
                                  f"{where}: {path}: {e}") from None
    try:
        return states_from_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: {path} is neither JSON nor a paddle pickle: not a "
                              "training state") from None
    except StateFormatError as e:
        raise CheckpointError(f"{where}: {path} is not a valid training state ({e})") from None


def _rebuild_rng(obj):
    """The inert stand-ins of GeneratorState in a pickle .pdstates -> real ones, checked."""
    if isinstance(obj, Opaque):
        state = obj.state
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[3], list)
                and all(isinstance(b, int) and 0 <= b < 128 for b in state[3])):
            raise StateFormatError("a paddle RNG state that is not (device, seed, offset, text)")
        return generator_state(state[0], state[1], state[2], bytes(state[3]).decode("ascii"))
    if isinstance(obj, dict):
        return {k: _rebuild_rng(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild_rng(v) for v in obj)
    return obj


def _listed_files(states, path, where):
    """The set's files a .pdstates lists, {suffix: crc}; only the set's own suffixes, so a
    crafted entry cannot name (and have us read or rename) a file outside the set."""
    files = states.get("files", {})
    bad = sorted(str(k) for k in files if k not in SUFFIXES)
    if not isinstance(files, dict) or bad:
        raise CheckpointError(f"{where}: {path} lists files that are not part of a checkpoint set: "
                              f"{bad[:3]} (expected some of {list(SUFFIXES)})")
    return files


def _load_set(prefix, where):
    path = prefix + ".pdstates"
    for need in (prefix + ".pdparams", path):
        if not os.path.exists(need):
            raise CheckpointError(f"{where}: {need} does not exist")
    states = _read_states_file(path, where)
    for suffix, crc in _listed_files(states, path, where).items():
        part = prefix + suffix
        if not os.path.exists(part):
            raise CheckpointError(f"{where}: {part} is missing but {path} lists it")
        if _crc(part) != crc:
            raise CheckpointError(
                f"{where}: {part} does not belong to {path} (CRC mismatch: the file is damaged, "
                "or comes from another save); resume from an epoch_N checkpoint instead")
    return states


def _roll_forward(prefix, refused):
    """Complete a save that was killed between its renames: its temp files were fully written,
    and its temp .pdstates vouches for them. Returns True when a set was completed; `refused`
    gets the reason for each temp .pdstates that could not be read."""
    for pid, temps in sorted(_temps(prefix).items(), reverse=True):
        if ".pdstates" not in temps:
            continue
        try:
            states = _read_states_file(temps[".pdstates"], "roll forward")
            files = _listed_files(states, temps[".pdstates"], "roll forward")
        except CheckpointError as e:
            refused.append(str(e))
            continue
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
    except CheckpointError as e:
        refused = []
        if not _roll_forward(prefix, refused):
            if not refused:
                raise
            raise CheckpointError("\n  ".join([str(e), "the temp files of an interrupted save "
                                                "could not complete it:", *refused])) from None
    return _load_set(prefix, where)


def load_checkpoint(prefix, model, optimizer=None, ema=None, key="Global.checkpoints"):
    """Restore weights, optimizer and EMA from a set written by save_checkpoint; returns states."""
    prefix = strip_suffix(prefix)
    states = read_states(prefix, key)
    load_strict(model, _load_file(prefix + ".pdparams", key),
                f"{key}={prefix}.pdparams: the weights do not fit the model built from Arch:")
    if optimizer is not None:
        if ".pdopt" not in states["files"]:
            raise CheckpointError(f"{key}={prefix}: {prefix}.pdopt is missing; cannot resume "
                                  "the optimizer (use Global.pretrained_model to start anew)")
        stored = _load_file(prefix + ".pdopt", key)
        try:
            opt_state = restore_opt_state(stored, model)
        except CheckpointError as e:
            raise CheckpointError(f"{key}={prefix}: {prefix}.pdopt: {e}") from None
        # the lr schedule is rebuilt from the config and replayed by the trainer (it follows a
        # changed Global.epochs / Optimizer.lr); the stored one would override it
        # (also when the stored state has none: paddle asserts on a missing one)
        if hasattr(optimizer._learning_rate, "state_dict"):
            opt_state["LR_Scheduler"] = optimizer._learning_rate.state_dict()  # keep it as is
        optimizer.set_state_dict(opt_state)
    if ema is not None and ".pdema" in states["files"]:
        ema.set_state_dict(_load_file(prefix + ".pdema", key))
    return states


def _load_file(path, key):
    """A .pdparams / .pdopt / .pdema of a set, read by the restricted reader -> its dict, the
    arrays as Tensors (what paddle.load gives and optimizer.set_state_dict expects)."""
    try:
        state = load_pickle_weights(path)
    except WeightsError as e:
        raise CheckpointError(f"{key}={strip_suffix(path)}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{key}={strip_suffix(path)}: {path} does not hold a state dict")
    state.pop("StructuredToParameterName@@", None)
    return _as_tensors(state)


def _as_tensors(obj):
    """paddle.load's own conversion: arrays, and the (name, array) pairs paddle.save writes for
    tensors nested deeper (master_weights), become Tensors."""
    if isinstance(obj, np.ndarray):
        return paddle.to_tensor(obj)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) \
            and isinstance(obj[1], np.ndarray):
        tensor = paddle.to_tensor(obj[1])
        tensor.name = obj[0]
        return tensor
    if isinstance(obj, dict):
        return {k: _as_tensors(v) for k, v in obj.items()}
    return obj


def describe(prefix):
    """One line for logs: what a checkpoint set holds."""
    s = read_states(prefix)
    return (f"{strip_suffix(prefix)}: epoch {s.get('epoch')} step {s.get('global_step')} "
            f"best top-1 {s.get('best_metric')} (epoch {s.get('best_epoch')})")


def main(argv=None):
    """python -m ppmobilenet.engine.checkpoint out/latest ...: one line per set; a set that
    cannot be read is named on stderr and the exit status is 1."""
    status = 0
    for p in sys.argv[1:] if argv is None else argv:
        try:
            print(describe(p))
        except PPMobileNetError as e:
            print(f"{e.title}: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
