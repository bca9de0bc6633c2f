"""Label files for deployment: read (as DeployError) and the one the config knows about."""
import os

from ..io import read_labels as read_label_file
from ..data.demo import prepare_demo_digits
from .errors import DeployError


def read_labels(path, class_num=None):
    """ppmobilenet.io.read_labels, its errors a DeployError."""
    return read_label_file(path, class_num, error=DeployError)


def label_file_from_config(cfg):
    """The label file the config knows about, or None: Infer.class_id_map_file, then the
    Eval / Train data set's label_file, then the labels.txt the training run wrote beside the
    weights of Global.pretrained_model (the training data's class names: ImageFolder's folder
    names), then the bundled demo digits' own file."""
    if cfg["Infer"]["class_id_map_file"]:
        return cfg["Infer"]["class_id_map_file"]
    datasets = [cfg["DataLoader"][mode]["dataset"] for mode in ("Eval", "Train")]
    for ds in datasets:
        if ds["label_file"]:
            return ds["label_file"]
    weights = cfg["Global"]["pretrained_model"]
    run_labels = os.path.join(os.path.dirname(os.path.abspath(weights)), "labels.txt") if weights else None
    if run_labels and os.path.isfile(run_labels):
        return run_labels
    for ds in datasets:
        if ds["name"] == "DemoDigits":
            return prepare_demo_digits(ds["cache_dir"], ds["image_size"])["label_file"]
    return None
