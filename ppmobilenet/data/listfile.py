"""The two text formats of the fluid-era / PaddleClas tools, read by ppmobilenet.io.

List file: one sample a line, `relative/path label` (label an int in [0, class_num));
label file: `id name` per line (`0 tench, Tinca tinca`). In both, blank lines and lines starting
with `#` are ignored. Every parse error is a DataError naming file:line.
"""
from ..io import read_labels, read_list_file
from .errors import DataError


def parse_list_file(path, class_num=None):
    """-> [(relative_path, label, line_no)]; labels checked against [0, class_num)."""
    return read_list_file(path, class_num, error=DataError)


def parse_label_file(path, class_num=None):
    """-> list of class names indexed by id; ids must be 0..n-1, each once."""
    return read_labels(path, class_num, error=DataError)
