"""The two text formats of the fluid-era / PaddleClas tools.

List file: one sample a line, `relative/path label` (label an int in [0, class_num));
label file: `id name` per line (`0 tench, Tinca tinca`). In both, blank lines and lines starting
with `#` are ignored. Every parse error is a DataError naming file:line.
"""
import itertools

from .errors import DataError


def _lines(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield no, line


def parse_list_file(path, class_num=None):
    """-> [(relative_path, label, line_no)]; labels checked against [0, class_num)."""
    samples = []
    for no, line in _lines(path, "list file"):
        parts = line.rsplit(None, 1)        # the path may contain spaces; the label is last
        if len(parts) != 2:
            raise DataError(f"{path}:{no}: expected 'relative/path label', got {line!r}")
        rel, label = parts
        try:
            label = int(label)
        except ValueError:
            raise DataError(f"{path}:{no}: label {label!r} is not an integer (line {line!r})") from None
        if label < 0 or (class_num is not None and label >= class_num):
            upper = f"{class_num}) (Arch.class_num is {class_num})" if class_num is not None else "inf)"
            raise DataError(f"{path}:{no}: label {label} out of range [0, {upper}")
        samples.append((rel, label, no))
    if not samples:
        raise DataError(f"list file {path} has no samples")
    return samples


def parse_label_file(path, class_num=None):
    """-> list of class names indexed by id; ids must be 0..n-1, each once."""
    names = {}
    for no, line in _lines(path, "label file"):
        parts = line.split(None, 1)
        try:
            idx = int(parts[0])
        except ValueError:
            raise DataError(f"{path}:{no}: expected 'id name', got {line!r}") from None
        if idx < 0:
            raise DataError(f"{path}:{no}: negative class id {idx}")
        if idx in names:
            raise DataError(f"{path}:{no}: class id {idx} appears twice")
        names[idx] = parts[1].strip() if len(parts) > 1 else str(idx)
    if not names:
        raise DataError(f"label file {path} has no classes")
    if max(names) + 1 != len(names):       # ids are distinct and >= 0: some are skipped
        # the first ten gaps, lazily: a set of all ids up to the max, for "0 a\n999999999 b",
        # would take a billion entries
        missing = list(itertools.islice((i for i in range(max(names)) if i not in names), 10))
        raise DataError(f"label file {path} skips class ids {missing}")
    if class_num is not None and len(names) != class_num:
        raise DataError(f"label file {path} names {len(names)} classes but Arch.class_num is {class_num}")
    return [names[i] for i in range(len(names))]
