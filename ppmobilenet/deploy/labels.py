"""Label files: one class a line, `id name` (PaddleClas's class_id_map_file format)."""
import os

from .errors import DeployError
from .fileio import write_text


def read_labels(path, class_num=None):
    """-> list of names indexed by class id. Ids must be 0..n-1, each once; with class_num the
    count must match the model's (a label file of another data set is the usual mistake)."""
    if not os.path.isfile(path):
        raise DeployError(f"label file {path}: not found")
    names = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            try:
                cid = int(parts[0])
            except ValueError:
                raise DeployError(f"label file {path}, line {lineno}: expected `id name`, "
                                  f"got {line!r}") from None
            if cid in names:
                raise DeployError(f"label file {path}, line {lineno}: class id {cid} appears twice")
            names[cid] = parts[1].strip() if len(parts) > 1 else str(cid)
    if not names:
        raise DeployError(f"label file {path}: no labels in it")
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise DeployError(f"label file {path}: ids must run 0..{len(names) - 1}; "
                          f"missing {missing[:5]}, found {sorted(set(names) - set(range(len(names))))[:5]}")
    if class_num is not None and len(names) != class_num:
        raise DeployError(f"label file {path}: {len(names)} labels but the model has "
                          f"{class_num} classes")
    return [names[i] for i in range(len(names))]


def write_labels(path, names):
    write_text(path, "".join(f"{i} {n}\n" for i, n in enumerate(names)))


def label_file_from_config(cfg):
    """The label file the config knows about, or None: Infer.class_id_map_file, then the
    Eval / Train data set's label_file, then the bundled demo digits' own file."""
    infer = cfg.get("Infer") or {}
    if infer.get("class_id_map_file"):
        return infer["class_id_map_file"]
    loaders = cfg.get("DataLoader") or {}
    for mode in ("Eval", "Train"):
        ds = ((loaders.get(mode) or {}).get("dataset") or {})
        if ds.get("label_file"):
            return ds["label_file"]
    for mode in ("Eval", "Train"):
        ds = ((loaders.get(mode) or {}).get("dataset") or {})
        if ds.get("name") == "DemoDigits":
            try:
                from ppmobilenet.data.demo import prepare_demo_digits
            except ImportError:
                return None
            kwargs = {"cache_dir": ds.get("cache_dir")}
            if ds.get("image_size"):
                kwargs["image_size"] = ds["image_size"]
            return prepare_demo_digits(**kwargs).get("label_file")
    return None
