"""ppmobilenet.data on real files: PNG/JPEG images written here, the real scikit-learn digits,
paddle.io.DataLoader with real worker processes."""
import logging
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ppmobilenet.config import ConfigError, validate_config
from ppmobilenet.data import (DataError, DemoDigits, ImageFolder, ImageNetDataset, ShardedBatchSampler,
                              build_dataloader, build_dataset, build_transforms, load_image,
                              parse_label_file, parse_list_file, pop_bad_samples, prepare_demo_digits,
                              sample_rng)
from ppmobilenet.data.demo import DIGIT_NAMES, stratified_split

SMALL_TF = [{"Resize": {"size": 24}}, {"CenterCrop": {"size": 24}}, {"ToTensor": {}}]
AUG_TF = [{"RandomResizedCrop": {"size": 32, "scale": [0.3, 1.0]}}, {"RandomHorizontalFlip": {}},
          {"ToTensor": {}}, {"Normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}]
# the configs' ending: Normalize on 0-255 HWC pixels + Transpose (what transforms_on_batch runs)
PIXEL_STD = [58.395, 57.12, 57.375]
NORMALIZE_TF = [{"Normalize": {"mean": [123.675, 116.28, 103.53], "std": PIXEL_STD, "data_format": "HWC"}},
                {"Transpose": {"order": [2, 0, 1]}}]


def make_cfg(train=None, eval=None, seed=0, class_num=10, **glob):
    raw = {"Global": {"epochs": 1, "seed": seed, **glob}, "Arch": {"name": "mobilenet_v1", "class_num": class_num},
           "Metric": {"topk": [1]}, "DataLoader": {}}
    for mode, sec in (("Train", train), ("Eval", eval)):
        if sec is not None:
            raw["DataLoader"][mode] = sec
    return validate_config(raw)


def write_images(root, n, size=(40, 30), fmt="PNG", classes=3, seed=0):
    """n random RGB images under root/img/ and their `relative/path label` lines."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    lines = []
    for i in range(n):
        ext = "png" if fmt == "PNG" else "jpg"
        rel = f"img/{i:03d}.{ext}"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(os.path.join(root, rel), fmt)
        lines.append(f"{rel} {i % classes}")
    return lines


def write_list(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    return prepare_demo_digits(str(tmp_path_factory.mktemp("cache")))


def digits_cfg(digits, **kw):
    cache = os.path.dirname(digits["root"])
    sec = {"dataset": {"name": "DemoDigits", "cache_dir": cache}, "transforms": AUG_TF,
           "sampler": {"batch_size": kw.pop("batch_size", 32)}, "loader": {"num_workers": kw.pop("num_workers", 0)}}
    return make_cfg(train=sec, **kw)


def digits_subset_cfg(digits, tmp_path, n=100, batch_size=16, num_workers=0, **kw):
    """An ImageNetDataset over the first n demo PNGs: the same code path, a shorter epoch."""
    with open(digits["train_list"]) as f:
        lines = f.read().splitlines()[:n]
    lst = write_list(tmp_path / "sub.txt", lines)
    sec = {"dataset": {"name": "ImageNetDataset", "image_root": digits["root"], "cls_label_path": lst},
           "transforms": AUG_TF, "sampler": {"batch_size": batch_size, "shuffle": True},
           "loader": {"num_workers": num_workers}}
    return make_cfg(train=sec, eval=dict(sec), **kw)


def batches(loader, limit=None):
    out = []
    for i, (x, y) in enumerate(loader):
        out.append((x.numpy(), y.numpy()))
        if limit and i + 1 >= limit:
            break
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


# ------------------------------------------------------------------ images

def test_load_image_converts_every_mode_to_rgb(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    cases = {
        "gray.png": Image.fromarray(gray, "L"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA"),
        "pal.png": Image.fromarray(gray, "L").convert("P"),
        "deep.png": Image.fromarray(gray.astype(np.uint16) * 257),            # 16-bit grayscale
        "cmyk.jpg": Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert("CMYK"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = load_image(str(tmp_path / name))
        assert out.mode == "RGB" and out.size == (30, 20), name
    deep = np.asarray(load_image(str(tmp_path / "deep.png")))[:, :, 0].astype(int)
    assert np.abs(deep - gray).max() <= 1                  # scaled from 16 bits, not clipped


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f"image not found: {tmp_path}/nope.png"):
        load_image(str(tmp_path / "nope.png"))
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=f"cannot read image {tmp_path}/junk.jpg"):
        load_image(str(tmp_path / "junk.jpg"))
    write_images(str(tmp_path), 1, size=(64, 64))
    data = (tmp_path / "img/000.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])             # truncated file
    with pytest.raises(DataError, match="cut.png"):
        load_image(str(tmp_path / "cut.png"))


# ------------------------------------------------------------------ list and label files

def test_list_file_comments_blank_lines_and_spaces(tmp_path):
    lst = write_list(tmp_path / "l.txt", ["# header", "", "a/b c.jpg 2", "   ", "x.png 0  "])
    assert parse_list_file(lst, 3) == [("a/b c.jpg", 2, 3), ("x.png", 0, 5)]


@pytest.mark.parametrize("line, message", [
    ("justonefield", "expected 'relative/path label'"),
    ("a.png two", "label 'two' is not an integer"),
    ("a.png 10", "label 10 out of range [0, 10) (Arch.class_num is 10)"),
    ("a.png -1", "label -1 out of range"),
])
def test_list_file_errors_name_file_and_line(tmp_path, line, message):
    lst = write_list(tmp_path / "l.txt", ["# ok", "b.png 1", line])
    with pytest.raises(DataError) as info:
        parse_list_file(lst, 10)
    assert str(info.value).startswith(f"{lst}:3: ") and message in str(info.value)


def test_list_file_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="list file not found"):
        parse_list_file(str(tmp_path / "none.txt"))
    with pytest.raises(DataError, match="has no samples"):
        parse_list_file(write_list(tmp_path / "e.txt", ["# nothing"]))


def test_label_file(tmp_path):
    good = write_list(tmp_path / "labels.txt", ["0 tench, Tinca tinca", "1 goldfish", "2 great white shark"])
    assert parse_label_file(good, 3) == ["tench, Tinca tinca", "goldfish", "great white shark"]
    with pytest.raises(DataError, match="names 3 classes but Arch.class_num is 4"):
        parse_label_file(good, 4)
    with pytest.raises(DataError, match=r"bad.txt:2: expected 'id name'"):
        parse_label_file(write_list(tmp_path / "bad.txt", ["0 a", "one b"]))
    with pytest.raises(DataError, match=r"skips class ids \[1\]"):
        parse_label_file(write_list(tmp_path / "gap.txt", ["0 a", "2 c"]))


# ------------------------------------------------------------------ datasets

def test_imagenet_dataset_items(tmp_path):
    lines = write_images(str(tmp_path), 4, fmt="JPEG")
    lst = write_list(tmp_path / "train.txt", lines)
    labels = write_list(tmp_path / "labels.txt", ["0 cat", "1 dog", "2 fish"])
    ds = ImageNetDataset(str(tmp_path), lst, build_transforms(SMALL_TF), class_num=3, label_file=labels)
    x, y = ds[1]
    assert x.shape == (3, 24, 24) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == np.int64 and int(y) == 1
    assert len(ds) == 4 and ds.class_num == 3 and ds.label_names == ["cat", "dog", "fish"]


def test_dataset_item_error_names_image_and_list_line(tmp_path):
    lines = write_images(str(tmp_path), 3)
    lst = write_list(tmp_path / "train.txt", ["# comment"] + lines + ["img/missing.png 1"])
    ds = ImageNetDataset(str(tmp_path), lst, build_transforms(SMALL_TF), class_num=3)
    with pytest.raises(DataError) as info:
        ds[3]
    assert str(info.value) == f"image not found: {tmp_path}/img/missing.png (listed at {lst}:5)"


def test_image_folder(tmp_path):
    for cls in ("dog", "cat", "bird"):
        write_images(str(tmp_path / "root" / cls), 2)
    (tmp_path / "root" / "cat" / "img" / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path / "root"), build_transforms(SMALL_TF), class_num=3)
    assert ds.label_names == ["bird", "cat", "dog"] and len(ds) == 6
    assert [label for _, label, _ in ds.samples] == [0, 0, 1, 1, 2, 2]
    assert ds[2][0].shape == (3, 24, 24)
    with pytest.raises(DataError, match="has 3 class folders but Arch.class_num is 5"):
        ImageFolder(str(tmp_path / "root"), class_num=5)
    # an eval subset: the label file maps folder names to the training ids
    labels = write_list(tmp_path / "labels.txt", ["0 ant", "1 bird", "2 cat", "3 dog"])
    ds = ImageFolder(str(tmp_path / "root"), class_num=4, label_file=labels)
    assert [label for _, label, _ in ds.samples] == [1, 1, 2, 2, 3, 3]
    assert ds.label_names == ["ant", "bird", "cat", "dog"]


def test_transform_spec_errors():
    with pytest.raises(DataError, match=r"transforms\[1\]: unknown transform 'ToTensr'.*did you mean 'ToTensor'"):
        build_transforms([{"Resize": {"size": 8}}, {"ToTensr": {}}])
    with pytest.raises(DataError, match=r"transforms\[0\].Resize: bad arguments"):
        build_transforms([{"Resize": {"sise": 8}}])


def test_transforms_without_to_tensor_still_give_chw_float(tmp_path):
    img = Image.fromarray(np.full((10, 12, 3), 255, np.uint8))
    out = build_transforms([{"CenterCrop": {"size": 8}}])(img)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32 and out.max() == 1.0


def test_sample_rng_is_pure_and_restores_global_state():
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    with sample_rng(7, 2, 99):
        a = (random.random(), np.random.rand())
    with sample_rng(7, 2, 99):
        b = (random.random(), np.random.rand())
    with sample_rng(7, 3, 99):
        c = (random.random(), np.random.rand())
    assert a == b and a != c
    assert (random.random(), np.random.rand()) == expected


# ------------------------------------------------------------------ bad samples through the loader

def bad_set(tmp_path, skip, num_workers, cache="no"):
    """6 good PNGs, one missing file and one corrupt file (list lines 4 and 8); cache "no",
    "images" (cache_images) or "on_batch" (cache_images + transforms_on_batch)."""
    lines = write_images(str(tmp_path), 6, size=(32, 32))
    (tmp_path / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    lines = lines[:3] + ["img/missing.png 1"] + lines[3:] + ["img/corrupt.png 2"]
    lst = write_list(tmp_path / "train.txt", lines)
    sec = {"dataset": {"name": "ImageNetDataset", "image_root": str(tmp_path), "cls_label_path": lst,
                       "skip_bad_samples": skip, "cache_images": cache != "no",
                       "transforms_on_batch": cache == "on_batch"},
           "transforms": NORMALIZE_TF if cache == "on_batch" else SMALL_TF,
           "sampler": {"batch_size": 3, "shuffle": False}, "loader": {"num_workers": num_workers}}
    return make_cfg(train=sec, eval=sec, class_num=3), lst


@pytest.mark.parametrize("cache", ["no", "images", "on_batch"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_image_stops_the_epoch_with_file_and_line(tmp_path, num_workers, cache):
    cfg, lst = bad_set(tmp_path, skip=False, num_workers=num_workers, cache=cache)
    loader = build_dataloader(cfg, "Train")
    got = []
    with pytest.raises(DataError) as info:
        for x, y in loader:
            got.append(y.numpy().tolist())
    msg = str(info.value)
    assert msg.startswith(f"image not found: {tmp_path}/img/missing.png (listed at {lst}:4)")
    assert "skip_bad_samples=true" in msg
    assert got == [[0, 1, 2]]                              # the batch before the bad one came through


@pytest.mark.parametrize("cache", ["no", "images", "on_batch"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_bad_samples_drops_and_reports_them(tmp_path, caplog, num_workers, cache):
    cfg, lst = bad_set(tmp_path, skip=True, num_workers=num_workers, cache=cache)
    loader = build_dataloader(cfg, "Train")
    with caplog.at_level(logging.WARNING, logger="ppmobilenet.data"):
        got = batches(loader)
    labels = np.concatenate([y for _, y in got]).tolist()
    assert labels == [0, 1, 2, 0, 1, 2]                     # the 6 good ones, in list order
    assert [x.shape[0] for x, _ in got] == [3, 2, 1]
    report = pop_bad_samples(loader)
    assert [(r["path"], r["line"]) for r in report] == [(f"{tmp_path}/img/missing.png", f"{lst}:4"),
                                                        (f"{tmp_path}/img/corrupt.png", f"{lst}:8")]
    assert "image not found" in report[0]["reason"] and "cannot read image" in report[1]["reason"]
    assert pop_bad_samples(loader) == []
    text = caplog.text
    assert "skipped 2 bad sample(s)" in text and f"{lst}:4" in text and f"{lst}:8" in text


def test_every_sample_bad_is_an_error_even_when_skipping(tmp_path):
    lst = write_list(tmp_path / "l.txt", ["a.png 0", "b.png 1"])
    sec = {"dataset": {"name": "ImageNetDataset", "image_root": str(tmp_path), "cls_label_path": lst,
                       "skip_bad_samples": True}, "transforms": SMALL_TF, "loader": {"num_workers": 0}}
    loader = build_dataloader(make_cfg(train=sec, eval=sec, class_num=2), "Eval")
    with pytest.raises(DataError, match="every sample of this pass failed to load"):
        batches(loader)


def test_transform_failures_are_errors_even_when_skipping(tmp_path):
    lst = write_list(tmp_path / "l.txt", write_images(str(tmp_path), 4, size=(32, 32)))
    ds = {"name": "ImageNetDataset", "image_root": str(tmp_path), "cls_label_path": lst, "skip_bad_samples": True}
    sec = {"dataset": ds, "transforms": [{"RandomCrop": {"size": 100}}, {"ToTensor": {}}],
           "loader": {"num_workers": 0}}
    with pytest.raises(DataError, match=r"RandomCrop.*failed on .*img/00\d.png \(listed at .*l.txt:\d\) \(size \(32, 32\)\): ValueError"):
        batches(build_dataloader(make_cfg(train=sec, eval=sec, class_num=3), "Train"))
    # a transform list that leaves sizes free: images of one batch cannot be stacked
    lines = write_images(str(tmp_path / "b"), 1, size=(30, 20)) + \
        [f"b2/{p}" for p in write_images(str(tmp_path / "b" / "b2"), 1, size=(50, 20))]
    lst = write_list(tmp_path / "b" / "l.txt", lines)
    ds.update(image_root=str(tmp_path / "b"), cls_label_path=lst)
    sec["transforms"] = [{"ToTensor": {}}]
    with pytest.raises(DataError, match="different shapes .*fixed-size op"):
        batches(build_dataloader(make_cfg(train=sec, eval=sec, class_num=3), "Train"))


# ------------------------------------------------------------------ demo digits

def test_demo_digits_files(digits):
    root = digits["root"]
    assert os.path.basename(root) == "demo_digits"
    train = parse_list_file(digits["train_list"], 10)
    val = parse_list_file(digits["val_list"], 10)
    assert (len(train), len(val)) == (1438, 359)
    assert not {r for r, _, _ in train} & {r for r, _, _ in val}
    per_class = np.bincount([lab for _, lab, _ in val], minlength=10)
    assert per_class.min() >= 34 and per_class.max() <= 37             # stratified
    assert parse_label_file(digits["label_file"]) == DIGIT_NAMES
    with open(digits["label_file"]) as f:
        assert f.read().splitlines()[:2] == ["0 zero", "1 one"]
    for rel, label, _ in train[:5] + val[:5]:
        with Image.open(os.path.join(root, rel)) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
        assert rel.split("/")[1] == str(label)
    # the pixels are the digit itself: 0..16 scaled to 0..255, bilinear 8x8 -> 64x64
    from sklearn.datasets import load_digits
    d = load_digits()
    rel, label, _ = train[0]
    idx = int(os.path.splitext(os.path.basename(rel))[0])
    assert d.target[idx] == label
    small = Image.fromarray(np.round(d.images[idx] * 255 / 16).astype(np.uint8), "L")
    expected = np.asarray(small.resize((64, 64), Image.BILINEAR))
    np.testing.assert_array_equal(np.asarray(load_image(os.path.join(root, rel)))[:, :, 1], expected)
    assert not [n for n in os.listdir(os.path.dirname(root)) if n.startswith(".demo_digits")]


def test_demo_digits_split_is_a_fixed_function():
    labels = np.repeat(np.arange(3), 10)
    a, b = stratified_split(labels)
    assert (len(a), len(b)) == (24, 6)
    np.testing.assert_array_equal(np.concatenate(stratified_split(labels)), np.concatenate([a, b]))


def test_demo_digits_prepared_once(digits):
    root = digits["root"]
    png = os.path.join(root, parse_list_file(digits["train_list"])[0][0])
    before = (os.stat(root).st_ino, os.stat(png).st_mtime_ns, os.stat(digits["train_list"]).st_mtime_ns)
    again = prepare_demo_digits(os.path.dirname(root))
    assert again == digits
    assert (os.stat(root).st_ino, os.stat(png).st_mtime_ns, os.stat(digits["train_list"]).st_mtime_ns) == before


def test_demo_dataset_and_class_num(digits):
    cfg = digits_cfg(digits)
    ds = build_dataset(cfg, "Train")
    assert isinstance(ds, DemoDigits) and len(ds) == 1438 and ds.label_names[3] == "three"
    loader = build_dataloader(cfg, "Train", dataset=ds)
    assert loader.dataset.label_names == DIGIT_NAMES and loader.dataset.class_num == 10
    assert len(loader) == 45 and loader.batch_sampler.num_samples == 1438
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert len(build_dataset(digits_cfg(digits), "Eval")) == 359
    with pytest.raises(DataError, match="DemoDigits has 10 classes but Arch.class_num is 5; set Arch.class_num=10"):
        build_dataset(digits_cfg(digits, class_num=5), "Train")


def test_half_made_and_foreign_demo_folders_are_never_used(tmp_path):
    cache = tmp_path / "cache"
    # a killed run's temp folder (dead pid, old) and a "demo_digits_16" without meta.json
    stale = cache / ".demo_digits-tmp-999999999-abc"
    stale.mkdir(parents=True)
    (stale / "train_list.txt").write_text("junk 0\n")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (cache / "demo_digits_16" / "train").mkdir(parents=True)
    (cache / "demo_digits_16" / "train_list.txt").write_text("junk 0\n")
    paths = prepare_demo_digits(str(cache), image_size=16)
    assert paths["root"] == str(cache / "demo_digits_16")
    assert len(parse_list_file(paths["train_list"])) == 1438
    assert sorted(os.listdir(cache)) == ["demo_digits_16"]
    with Image.open(cache / "demo_digits_16" / parse_list_file(paths["val_list"])[0][0]) as img:
        assert img.size == (16, 16)


@pytest.mark.slow
def test_concurrent_first_use_builds_one_folder(tmp_path):
    code = ("import sys; from ppmobilenet.data.demo import prepare_demo_digits; "
            "print(prepare_demo_digits(sys.argv[1], 32)['root'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    roots = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert roots == {str(tmp_path / "demo_digits_32")}
    assert os.listdir(tmp_path) == ["demo_digits_32"]
    assert len(parse_list_file(str(tmp_path / "demo_digits_32" / "val_list.txt"))) == 359


# ------------------------------------------------------------------ determinism, resume, shards

def test_same_batches_whatever_num_workers(digits, tmp_path):
    a = batches(build_dataloader(digits_subset_cfg(digits, tmp_path, num_workers=0), "Train", epoch=3))
    b = batches(build_dataloader(digits_subset_cfg(digits, tmp_path, num_workers=2), "Train", epoch=3))
    assert len(a) == 7 and [len(y) for _, y in a] == [16] * 6 + [4]
    assert_same(a, b)
    # and the full demo epoch through DemoDigits itself, first batches
    c = batches(build_dataloader(digits_cfg(digits, num_workers=0), "Train", epoch=1), limit=3)
    d = batches(build_dataloader(digits_cfg(digits, num_workers=2), "Train", epoch=1), limit=3)
    assert_same(c, d)


@pytest.mark.parametrize("transforms", ["random", "deterministic"])
def test_cached_images_give_the_same_batches_without_reading_a_file_again(digits, tmp_path, transforms):
    """cache_images decodes once (or, for a pipeline without randomness, transforms once), in
    the process that builds the data set: its loader workers (forked) use that copy, so the
    batches equal the uncached ones even with the files gone."""
    root = tmp_path / "copy"
    shutil.copytree(digits["root"], root)
    cfg = digits_subset_cfg(digits, tmp_path, n=48)
    cfg["DataLoader"]["Train"]["dataset"]["image_root"] = str(root)
    if transforms == "deterministic":
        cfg["DataLoader"]["Train"]["transforms"] = [{"Resize": {"size": 40}}, {"CenterCrop": {"size": 32}}] + NORMALIZE_TF
    uncached = batches(build_dataloader(cfg, "Train", epoch=2))
    cfg["DataLoader"]["Train"]["dataset"]["cache_images"] = True
    cfg["DataLoader"]["Train"]["loader"]["num_workers"] = 2
    dataset = build_dataset(cfg, "Train")
    kept = dataset.transformed if transforms == "deterministic" else dataset.decoded
    assert kept is not None and len(kept) == 48
    shutil.rmtree(root)
    assert_same(batches(build_dataloader(cfg, "Train", epoch=2, dataset=dataset)), uncached)
    again = batches(build_dataloader(cfg, "Train", epoch=2, dataset=dataset))
    assert_same(again, uncached)                            # the transforms left the cache as it was


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("size", [40, 80])      # the crops shrink (PIL widens its filter) / grow
def test_transforms_on_batch_give_the_per_image_crops_and_flips(digits, tmp_path, size, num_workers):
    """transforms_on_batch: the workers draw each image's crop and flip with the transforms' own
    code, the training process resamples the batch; the batches equal the per-image path's to
    within PIL's 8-bit rounding (at most about one level of 255), image for image."""
    cfg = digits_subset_cfg(digits, tmp_path, n=48, num_workers=num_workers)
    cfg["DataLoader"]["Train"]["transforms"] = [
        {"RandomResizedCrop": {"size": size, "scale": [0.3, 1.0]}}, {"RandomHorizontalFlip": {}}] + NORMALIZE_TF
    per_image = batches(build_dataloader(cfg, "Train", epoch=3))
    cfg["DataLoader"]["Train"]["dataset"].update(cache_images=True, transforms_on_batch=True)
    dataset = build_dataset(cfg, "Train")
    assert dataset.batch_transforms is not None
    on_batch = batches(build_dataloader(cfg, "Train", epoch=3, dataset=dataset))
    assert len(on_batch) == len(per_image)
    levels = []
    for (xa, ya), (xb, yb) in zip(per_image, on_batch):
        np.testing.assert_array_equal(ya, yb)
        assert xb.shape == xa.shape == (len(ya), 3, size, size) and xb.dtype == np.float32
        levels.append(np.abs(xb - xa) * np.float32(PIXEL_STD).reshape(1, 3, 1, 1))
    levels = np.concatenate(levels)
    assert levels.max() <= 1.01 and levels.mean() < 0.35


def test_transforms_on_batch_refuses_what_it_cannot_run(digits, tmp_path):
    cfg = digits_subset_cfg(digits, tmp_path, n=8)
    raw = {"Global": {"epochs": 1}, "Arch": {"name": "mobilenet_v1", "class_num": 10},
           "DataLoader": {"Train": {"dataset": {"transforms_on_batch": True}}}}
    with pytest.raises(ConfigError, match=r"DataLoader\.Train\.dataset\.transforms_on_batch needs "
                                          r"DataLoader\.Train\.dataset\.cache_images=true"):
        validate_config(raw)
    cfg["DataLoader"]["Train"]["dataset"].update(cache_images=True, transforms_on_batch=True)
    cfg["DataLoader"]["Train"]["transforms"] = [{"CenterCrop": {"size": 32}}] + NORMALIZE_TF
    with pytest.raises(DataError, match=r"DataLoader\.Train\.dataset\.transforms_on_batch: it runs the "
                                        r"transforms .*the transforms are \['CenterCrop', 'Normalize', "):
        build_dataset(cfg, "Train")
    cfg["DataLoader"]["Train"]["transforms"] = NORMALIZE_TF
    lines = write_images(str(tmp_path), 2, size=(32, 32)) + write_images(str(tmp_path / "b"), 1, size=(40, 30))
    lines[2] = "b/" + lines[2]
    cfg["DataLoader"]["Train"]["dataset"].update(image_root=str(tmp_path),
                                                 cls_label_path=write_list(tmp_path / "mixed.txt", lines))
    wrong = os.path.join(str(tmp_path), lines[2].split()[0])
    with pytest.raises(DataError, match=f"needs images of one size: {wrong} is RGB 40x30, the first is RGB 32x32"):
        build_dataset(cfg, "Train")


def test_epoch_and_seed_change_order_and_augmentation(digits, tmp_path):
    cfg = digits_subset_cfg(digits, tmp_path, n=48)
    loader = build_dataloader(cfg, "Train", epoch=0)
    first = batches(loader)
    assert_same(first, batches(loader))                     # iterating again repeats the epoch
    loader.set_epoch(1)
    other = batches(loader)
    assert sorted(np.concatenate([y for _, y in other])) == sorted(np.concatenate([y for _, y in first]))
    assert not np.array_equal(first[0][1], other[0][1])     # another order
    reseeded = batches(build_dataloader(digits_subset_cfg(digits, tmp_path, n=48, seed=1), "Train"))
    assert not np.array_equal(first[0][0], reseeded[0][0])
    # no shuffle: the same images in the same order, but epoch 1 augments them differently
    cfg["DataLoader"]["Train"]["sampler"]["shuffle"] = False
    e0 = batches(build_dataloader(cfg, "Train", epoch=0), limit=1)
    e1 = batches(build_dataloader(cfg, "Train", epoch=1), limit=1)
    np.testing.assert_array_equal(e0[0][1], e1[0][1])
    assert not np.array_equal(e0[0][0], e1[0][0])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_start_batch_is_the_tail_of_the_epoch(digits, tmp_path, num_workers):
    cfg = digits_subset_cfg(digits, tmp_path, num_workers=num_workers)
    full = batches(build_dataloader(cfg, "Train", epoch=2))
    loader = build_dataloader(cfg, "Train", epoch=2, start_batch=4)
    assert len(loader) == len(full) == 7                    # len is the whole epoch
    assert_same(batches(loader), full[4:])
    assert loader.next_batch == 7
    with pytest.raises(ValueError, match="start_batch 8 out of range: the epoch has 7 batches"):
        build_dataloader(cfg, "Train", epoch=2, start_batch=8)


def test_ranks_read_disjoint_shards_of_real_data(digits, tmp_path):
    cfg = digits_subset_cfg(digits, tmp_path, n=50, batch_size=4)
    for mode in ("Train", "Eval"):
        cfg["DataLoader"][mode]["transforms"] = SMALL_TF          # no augmentation: compare pixels
    one = batches(build_dataloader(cfg, "Eval"))
    all_images = np.concatenate([x for x, _ in one])
    shards = [np.concatenate([x for x, _ in batches(build_dataloader(cfg, "Eval", rank=r, world_size=3))])
              for r in range(3)]
    assert sum(len(s) for s in shards) == 50                  # eval: no padding, every image once
    for r, s in enumerate(shards):
        np.testing.assert_array_equal(s, all_images[r::3])
    train = [build_dataloader(cfg, "Train", rank=r, world_size=3, epoch=5) for r in range(3)]
    assert len({len(t) for t in train}) == 1                  # train: padded to equal batch counts
    with pytest.raises(ValueError, match="Global.seed is null"):
        build_dataloader(digits_subset_cfg(digits, tmp_path, seed=None), "Train", rank=0, world_size=2)
    assert len(batches(build_dataloader(digits_subset_cfg(digits, tmp_path, seed=None), "Train"))) == 7


@pytest.mark.parametrize("n, world, batch", [(10, 1, 3), (10, 2, 3), (11, 3, 2), (7, 4, 1), (64, 4, 4)])
def test_sampler_shards(n, world, batch):
    def shard(rank, pad, epoch=0, seed=5, drop_last=False, start=0):
        s = ShardedBatchSampler(n, batch, shuffle=True, drop_last=drop_last, seed=seed, epoch=epoch, rank=rank,
                                world_size=world, start_batch=start, pad=pad)
        out = list(s)
        assert start > 0 or len(out) == len(s)
        assert all(len(b) == batch for b in out[:-1]) and all(0 < len(b) <= batch for b in out)
        return [i for b in out for i in b]

    exact = [shard(r, pad=False) for r in range(world)]
    assert sorted(sum(exact, [])) == list(range(n))            # disjoint and covering
    padded = [shard(r, pad=True) for r in range(world)]
    assert len({len(p) for p in padded}) == 1                  # equal work per rank
    assert set(sum(padded, [])) == set(range(n))
    assert len(sum(padded, [])) - n == (-n) % world            # only the padding repeats
    assert shard(0, True) == shard(0, True)                    # a pure function ...
    if n > 2 * world:
        assert shard(0, True, epoch=1) != shard(0, True)       # ... of the epoch
        assert shard(0, True, seed=6) != shard(0, True)        # ... and of the seed
    if n % world == 0:
        # global batch b (all ranks) is one card's batch b at batch * world
        one = list(ShardedBatchSampler(n, batch * world, seed=5, epoch=0))
        per_rank = [list(ShardedBatchSampler(n, batch, seed=5, epoch=0, rank=r, world_size=world))
                    for r in range(world)]
        for b, big in enumerate(one):
            assert sorted(big) == sorted(sum((p[b] for p in per_rank), []))
    # resume: start_batch k gives exactly the rest
    full = list(ShardedBatchSampler(n, batch, seed=5, epoch=3, rank=0, world_size=world))
    k = len(full) // 2
    assert list(ShardedBatchSampler(n, batch, seed=5, epoch=3, rank=0, world_size=world, start_batch=k)) == full[k:]
    assert len(ShardedBatchSampler(n, batch, drop_last=True, world_size=world)) == (-(-n // world)) // batch


# ------------------------------------------------------------------ promised in docs/data.md

def _quadrants(size=(40, 24)):
    """An RGB image whose four quadrants have four distinct colours (w, h = size)."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2:] = (0, 255, 0)
    arr[h // 2:, : w // 2] = (0, 0, 255)
    arr[h // 2:, w // 2:] = (255, 255, 0)
    return arr


@pytest.mark.parametrize("orientation, turn", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_of_phone_photos_is_applied(tmp_path, orientation, turn):
    """A camera stores the sensor's pixels and an EXIF Orientation tag; the image must come out
    as the phone shows it (3: turned 180 degrees, 6: 90 clockwise, 8: 90 counter-clockwise)."""
    arr = _quadrants()
    want = np.rot90(arr, k=turn)
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        img = Image.fromarray(arr)
        exif = img.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"photo_{orientation}.{ext}"
        img.save(path, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
        got = np.asarray(load_image(str(path)))
        assert got.shape == want.shape, (fmt, got.shape, want.shape)
        if fmt == "PNG":
            np.testing.assert_array_equal(got, want)
        else:                               # lossy: the quadrants' mean colours
            h, w = want.shape[:2]
            for ys, xs in ((slice(0, h // 2), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))):
                assert np.abs(got[ys, xs].mean((0, 1)) - want[ys, xs].mean((0, 1))).max() < 30


def test_image_folder_takes_extensions_in_any_case_and_ignores_hidden_and_other_files(tmp_path):
    root = tmp_path / "root"
    names = {"cat": ["a.JPG", "b.Png", "c.jpeg", "d.WebP"], "dog": ["e.PNG", "f.bmp", "deep/g.TIFF"]}
    for cls, files in names.items():
        for name in files:
            (root / cls / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_quadrants()).save(root / cls / name, format={
                "jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP",
                "tiff": "TIFF"}[name.rsplit(".", 1)[1].lower()])
    for hidden in ("cat/.hidden.png", "cat/.thumbs/x.png", "dog/._e.PNG", ".git/h.png"):
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_quadrants()).save(root / hidden, format="PNG")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "Thumbs.db").write_bytes(b"\0" * 10)
    ds = ImageFolder(str(root), build_transforms(SMALL_TF), class_num=2)
    got = sorted(os.path.relpath(path, root) for path, _, _ in ds.samples)
    assert got == sorted(f"{c}/{n}" for c, files in names.items() for n in files), got
    assert ds.label_names == ["cat", "dog"] and len(ds) == 7
    assert ds[0][0].shape == (3, 24, 24)
    # the same rule for the images a prediction reads from a folder (tools/infer.py, lite_predict.py)
    from ppmobilenet.io import list_images
    assert [os.path.basename(p) for p in list_images(str(root / "cat"))] == names["cat"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_batch_that_loses_every_image_is_left_out(tmp_path, caplog, num_workers):
    """skip_bad_samples with batch 2: the middle batch has two missing images. The epoch gives
    the other two batches, reports both images, and still counts the whole epoch (next_batch,
    which the trainer checks against len(loader))."""
    lines = write_images(str(tmp_path), 4, size=(32, 32))
    lines = lines[:2] + ["img/gone1.png 0", "img/gone2.png 1"] + lines[2:]
    lst = write_list(tmp_path / "l.txt", lines)
    sec = {"dataset": {"name": "ImageNetDataset", "image_root": str(tmp_path), "cls_label_path": lst,
                       "skip_bad_samples": True},
           "transforms": SMALL_TF, "sampler": {"batch_size": 2, "shuffle": False},
           "loader": {"num_workers": num_workers}}
    loader = build_dataloader(make_cfg(train=sec, eval=sec, class_num=3), "Train")
    assert len(loader) == 3
    with caplog.at_level(logging.WARNING, logger="ppmobilenet.data"):
        got = batches(loader)
    assert [y.tolist() for _, y in got] == [[0, 1], [2, 0]]
    assert loader.next_batch == 3
    assert [r["line"] for r in pop_bad_samples(loader)] == [f"{lst}:3", f"{lst}:4"]
    assert "skipped 2 bad sample(s)" in caplog.text
