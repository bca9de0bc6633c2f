"""Files a run leaves beside its checkpoints: the resolved config and the class names."""
import os

from ..config import dump_config
from ..data import build_dataset
from ..io import write_labels as write_label_file


def write_resolved_config(cfg, output_dir):
    """<output_dir>/config.yaml: every key with its value for this run (defaults and -o
    overrides included), so `tools/eval.py -c <output_dir>/config.yaml` rebuilds the model."""
    return dump_config(cfg, os.path.join(output_dir, "config.yaml"))


def write_labels(cfg, output_dir, log=None, dataset=None):
    """<output_dir>/labels.txt in the `id name` format of a label file (Infer.class_id_map_file)."""
    class_num = int(cfg["Arch"]["class_num"])
    names = getattr(dataset, "label_names", None) if dataset is not None else None
    if names is None and dataset is None:
        try:
            names = build_dataset(cfg, "Train").label_names
        except Exception as e:  # the training run itself reports data errors
            if log:
                log.info(f"labels.txt: class names unavailable ({e}); writing ids")
    names = list(names) if names else [str(i) for i in range(class_num)]
    if len(names) != class_num and log:
        log.info(f"warning: the data set names {len(names)} classes, Arch.class_num is "
                 f"{class_num}")
    return write_label_file(os.path.join(output_dir, "labels.txt"), names)
