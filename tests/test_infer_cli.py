"""tools/infer.py as a newcomer runs it after training on photos in class folders: the positional
form `infer.py MODEL_DIR INPUT...` beside the flags, a folder of class folders searched
recursively, class names (not ids) by default, a corrupt image reported while the others are
classified, a missing model folder named as such; and the class names travelling from the
training folders into the run's and the export's labels.txt and export_meta.json."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from engine_helpers import ROOT, TRAIN, demo_subset, env, error_line, ok, tiny_config

INFER = os.path.join(ROOT, "tools", "infer.py")
EXPORT = os.path.join(ROOT, "tools", "export.py")
CLASSES = ["one", "three", "zero"]   # sorted folder names: the ids ImageFolder gives them
DIGIT = {"zero": 0, "one": 1, "three": 3}


def tool(script, *args, timeout=600):
    return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env())


def class_folders(root, listing, image_root, split, per_class):
    """Real digit PNGs of three classes copied into <root>/<split>/<class name>/ (the layout a
    user trains on), every other image one level deeper, as photos often sit."""
    counts = dict.fromkeys(CLASSES, 0)
    with open(listing) as f:
        for line in f:
            rel, label = line.split()
            name = next((n for n, d in DIGIT.items() if d == int(label)), None)
            if name is None or counts[name] >= per_class:
                continue
            sub = os.path.join(root, split, name, "more" if counts[name] % 2 else "")
            os.makedirs(sub, exist_ok=True)
            shutil.copy(os.path.join(image_root, rel), sub)
            counts[name] += 1
    return os.path.join(root, split)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MobileNetV1 x0.25 trained one epoch on ImageFolder class folders, exported by the CLI."""
    tmp = tmp_path_factory.mktemp("infer-cli")
    data = demo_subset(tmp / "lists", str(tmp_path_factory.getbasetemp() / "engine-cache"), n_train=1438, n_val=359)
    train_dir = class_folders(str(tmp / "photos"), data["train"], data["root"], "train", 24)
    val_dir = class_folders(str(tmp / "photos"), data["val"], data["root"], "val", 4)
    out = tmp / "run"
    cfg = tiny_config(tmp / "c.yaml", out, data, epochs=1, batch=24, workers=0)
    folders = []
    for mode, root in (("Train", train_dir), ("Eval", val_dir)):
        folders += [f"DataLoader.{mode}.dataset.name=ImageFolder", f"DataLoader.{mode}.dataset.image_root={root}",
                    f"DataLoader.{mode}.dataset.cls_label_path=null", f"DataLoader.{mode}.dataset.label_file=null"]
    ok(tool(TRAIN, "-c", cfg, "-o", "Arch.class_num=3", "Global.use_visualdl=false", *folders))
    export_dir = out / "inference"
    r = tool(EXPORT, "-c", out / "config.yaml", "-o", f"Global.pretrained_model={out / 'best_model'}")
    ok(r)
    return {"run": out, "export": export_dir, "val": val_dir, "tmp": tmp}


def infer_json(*args):
    r = tool(INFER, *args, "--json")
    return r, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else None)


def val_images(val_dir):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(val_dir) for f in files)


def test_the_run_keeps_the_training_folders_class_names(trained):
    assert (trained["run"] / "labels.txt").read_text() == "".join(f"{i} {n}\n" for i, n in enumerate(CLASSES))


def test_class_names_travel_into_the_export(trained):
    """No label file anywhere in the config: the names come from the training data."""
    assert (trained["export"] / "labels.txt").read_text() == (trained["run"] / "labels.txt").read_text()
    meta = json.loads((trained["export"] / "export_meta.json").read_text())
    assert meta["labels"] == "labels.txt"
    assert meta.get("class_names") == CLASSES


@pytest.mark.slow
def test_positional_form_class_folders_names_by_default(trained):
    export, val = trained["export"], trained["val"]
    labels = ["--labels", trained["run"] / "labels.txt"]   # the names, whatever the export holds
    r, out = infer_json(export, val, *labels)
    ok(r)
    assert sorted(x["image"] for x in out["results"]) == val_images(val) and len(out["results"]) == 12
    assert out["failed"] == []
    for x in out["results"]:
        top = x["topk"][0]
        assert top["label"] == CLASSES[top["class_id"]]
    # the table shows the names; --ids the ids alone
    table = ok(tool(INFER, export, val, *labels)).stdout
    assert any(f"{c} {n}" in table for c, n in enumerate(CLASSES)), table
    ids = json.loads(ok(tool(INFER, export, val, "--ids", "--json")).stdout)["results"]
    assert all(t["label"] is None for x in ids for t in x["topk"])
    assert [x["topk"][0]["class_id"] for x in ids] == [x["topk"][0]["class_id"] for x in out["results"]]
    # several inputs, and the flags as before: --model-dir/--input, -c/-o then positional inputs
    one = val_images(val)[0]
    r, two = infer_json(export, one, val_images(val)[1], *labels)
    assert [x["image"] for x in two["results"]] == val_images(val)[:2]
    r, flags = infer_json("--model-dir", export, "--input", val, *labels)     # class folders by the flags too
    assert [x["topk"] for x in flags["results"]] == [x["topk"] for x in out["results"]]
    r, with_config = infer_json("-c", trained["run"] / "config.yaml", "-o", f"Global.save_inference_dir={export}",
                                one, *labels)
    ok(r)
    assert with_config["results"][0]["topk"][0]["class_id"] == two["results"][0]["topk"][0]["class_id"]


def test_a_corrupt_image_is_reported_and_the_others_classified(trained, tmp_path):
    photos = tmp_path / "val"
    shutil.copytree(trained["val"], photos)
    (photos / "one" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r, out = infer_json("--model-dir", trained["export"], "--input", photos)   # the flags, as before
    assert r.returncode == 1 and out is not None, r.stderr[-2000:]
    assert len(out["results"]) == 12 and [f["image"] for f in out["failed"]] == [str(photos / "one" / "broken.jpg")]
    assert "1 of 13 images could not be classified" in r.stderr and "broken.jpg" in r.stderr
    good = infer_json(trained["export"], trained["val"])[1]["results"]
    assert [x["topk"] for x in out["results"]] == [x["topk"] for x in good]  # same numbers for the rest


def test_a_missing_model_folder_is_named_as_such(trained, tmp_path):
    missing = tmp_path / "nowhere" / "inference"
    one = val_images(trained["val"])[0]
    for args, source in ((("--model-dir", missing, "--input", one), "--model-dir"), ((missing, one), "MODEL_DIR")):
        r = tool(INFER, *args)
        line = error_line(r)
        assert r.returncode == 1 and f"model folder {missing} ({source}): not found" in line, line
        assert "export_meta.json" not in line
