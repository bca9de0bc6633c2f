"""List-file paths stay inside image_root: a list file is data from elsewhere, and its lines
must not make the project read any file it names (`../../etc/passwd 0`). Absolute paths only
with DataLoader.<mode>.dataset.allow_absolute_paths."""
import os

import numpy as np
import pytest
from PIL import Image

from ppmobilenet.config import validate_config
from ppmobilenet.data import DataError, ImageNetDataset, build_dataloader, build_dataset, build_transforms

TF = [{"Resize": {"size": 16}}, {"CenterCrop": {"size": 16}}]


def _image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(path)
    return str(path)


def _layout(tmp_path, *lines):
    """root/ with two images, a readable image beside it (outside), and a list file."""
    root = tmp_path / "root"
    _image(root / "a" / "0.png")
    _image(root / "b" / "1.png")
    outside = _image(tmp_path / "outside.png")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(["a/0.png 0", *lines]) + "\n")
    return str(root), str(lst), outside


def _cfg(root, lst, **dataset):
    cfg = validate_config({
        "Global": {"epochs": 1, "seed": 0, "eval_during_train": False}, "Arch": {"name": "mobilenet_v1", "class_num": 2},
        "DataLoader": {"Train": {"dataset": {"name": "ImageNetDataset", "image_root": root, "cls_label_path": lst},
                                 "transforms": TF, "sampler": {"batch_size": 2, "shuffle": False},
                                 "loader": {"num_workers": 0}}}})
    cfg["DataLoader"]["Train"]["dataset"].update(dataset)   # a key the schema may not list yet
    return cfg


@pytest.mark.parametrize("line", ["../outside.png 1", "a/../../outside.png 1", "../../../../../etc/passwd 0",
                                  ".. 1"])
def test_a_path_leading_outside_image_root_is_refused_naming_file_and_line(tmp_path, line):
    root, lst, _ = _layout(tmp_path, line)
    with pytest.raises(DataError) as info:
        build_dataset(_cfg(root, lst), "Train")
    msg = str(info.value)
    assert f"{lst}:2:" in msg and "outside image_root" in msg and line.rsplit(" ", 1)[0] in msg, msg


def test_an_absolute_path_is_refused_unless_the_config_allows_it(tmp_path):
    root, lst, outside = _layout(tmp_path, f"{os.path.abspath(os.path.join(tmp_path, 'outside.png'))} 1")
    with pytest.raises(DataError) as info:
        build_dataset(_cfg(root, lst), "Train")
    msg = str(info.value)
    assert f"{lst}:2: absolute image path" in msg, msg
    assert "DataLoader.Train.dataset.allow_absolute_paths=true" in msg, msg

    ds = build_dataset(_cfg(root, lst, allow_absolute_paths=True), "Train")
    assert ds.samples[1][0] == outside and ds[1][1] == 1          # read from where it says
    batches = [(x.numpy(), y.numpy()) for x, y in build_dataloader(_cfg(root, lst, allow_absolute_paths=True),
                                                                    "Train", dataset=ds)]
    assert [list(y) for _, y in batches] == [[0, 1]]


def test_paths_that_stay_inside_image_root_are_read(tmp_path):
    root, lst, _ = _layout(tmp_path, "b/../b/1.png 1", "a/./0.png 0", "b/..x.png 1")
    _image(os.path.join(root, "b", "..x.png"))                   # ".." inside a name is no escape
    ds = ImageNetDataset(root, lst, build_transforms(TF), class_num=2)
    assert [ds[i][1] for i in range(len(ds))] == [0, 1, 0, 1]


def test_a_symlink_inside_image_root_is_followed(tmp_path):
    """The check is on the path as written; the owner of image_root may link data into it."""
    root, lst, outside = _layout(tmp_path, "linked.png 1")
    os.symlink(outside, os.path.join(root, "linked.png"))
    ds = ImageNetDataset(root, lst, build_transforms(TF), class_num=2)
    assert ds[1][1] == 1
